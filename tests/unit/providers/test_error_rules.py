"""User error_parsing rules: compiled at build time, priority order, file-order ties."""

from __future__ import annotations

import orjson

from llmgateway.config.schemas import ErrorRule
from llmgateway.core.constants import ErrorReason
from llmgateway.providers.error_rules import CompiledRules, split_path, values_at
from tests.fixtures.provider_errors import ERRORS
from tests.unit.providers.factory import headers_of, make_adapter

R = ErrorReason
QUOTA_BODY = orjson.dumps({"error": {"code": "insufficient_quota", "message": "quota gone"}})


def rule(status: int, path: str, pattern: str, reason: R, priority: int = 0) -> ErrorRule:
    """A user rule as the loader builds it."""
    return ErrorRule(status, path, pattern, reason, priority, "test rule")


class TestCompiledRules:
    def test_highest_priority_wins_whatever_the_file_order(self) -> None:
        """A later rule with a higher priority is tried before an earlier, lower one."""
        rules = CompiledRules(
            [
                rule(400, "error.code", "quota", R.RATE_LIMITED, priority=1),
                rule(400, "error.code", "insufficient", R.NO_QUOTA, priority=10),
            ]
        )
        assert rules.match(400, orjson.loads(QUOTA_BODY)) is R.NO_QUOTA

    def test_equal_priorities_keep_file_order(self) -> None:
        """Between two matching rules of equal priority, the one written first wins."""
        first = rule(400, "error.code", "quota", R.NO_ACCESS, priority=5)
        second = rule(400, "error.code", "insufficient", R.NO_QUOTA, priority=5)
        doc = orjson.loads(QUOTA_BODY)
        assert CompiledRules([first, second]).match(400, doc) is R.NO_ACCESS
        assert CompiledRules([second, first]).match(400, doc) is R.NO_QUOTA

    def test_rules_are_indexed_by_status_code(self) -> None:
        """A rule for 400 is never consulted for a 429 with the same body."""
        rules = CompiledRules([rule(400, "error.code", "insufficient", R.NO_QUOTA)])
        assert rules.match(429, orjson.loads(QUOTA_BODY)) is None
        assert [r.reason for r in rules.rules_for(400)] == [R.NO_QUOTA]
        assert rules.rules_for(429) == ()

    def test_paths_are_split_and_patterns_compiled_once(self) -> None:
        """The compiled rule holds the split path tuple and a compiled pattern."""
        (compiled,) = CompiledRules(
            [rule(400, "error.details.*.reason", "^X$", R.NO_ACCESS)]
        ).rules_for(400)
        assert compiled.path == ("error", "details", "*", "reason")
        assert compiled.pattern.pattern == "^X$"

    def test_values_at_fans_out_indexes_and_stringifies(self) -> None:
        """Wildcards, list indexes, numbers and booleans are all matchable; objects are not."""
        doc = {"error": {"code": 429, "ok": False, "details": [{"r": "A"}, {"r": "B"}, {"r": {}}]}}
        assert list(values_at(doc, split_path("error.details.*.r"))) == ["A", "B"]
        assert list(values_at(doc, split_path("error.details.1.r"))) == ["B"]
        assert list(values_at(doc, split_path("error.details.9.r"))) == []
        assert list(values_at(doc, split_path("error.code"))) == ["429"]
        assert list(values_at(doc, split_path("error.ok"))) == ["false"]
        assert list(values_at(doc, split_path("error"))) == []


class TestAdapterRules:
    def test_user_rules_run_before_the_builtin_defaults(self) -> None:
        """A user rule overrides the built-in mapping of the same body."""
        status, headers, body = ERRORS["openai_like"]["insufficient_quota"]
        adapter = make_adapter(
            "openai_like", rules=(rule(429, "error.code", "^insufficient_quota$", R.RATE_LIMITED),)
        )
        assert adapter.classify_body(status, headers_of(headers), body).reason is R.RATE_LIMITED

    def test_builtin_defaults_apply_when_no_user_rule_matches(self) -> None:
        """A non-matching user rule leaves the built-in classification in place."""
        status, headers, body = ERRORS["anthropic"]["credit_balance"]
        adapter = make_adapter(
            "anthropic", rules=(rule(400, "error.type", "^nothing$", R.NO_MODEL),)
        )
        assert adapter.classify_body(status, headers_of(headers), body).reason is R.NO_QUOTA

    def test_disabled_error_parsing_ignores_user_rules(self) -> None:
        """With error_parsing.enabled false, only the built-in defaults classify."""
        status, headers, body = ERRORS["openai_like"]["insufficient_quota"]
        adapter = make_adapter(
            "openai_like",
            parsing_enabled=False,
            rules=(rule(429, "error.code", "insufficient_quota", R.RATE_LIMITED),),
        )
        assert adapter.classify_body(status, headers_of(headers), body).reason is R.NO_QUOTA

    def test_a_user_rule_classifies_a_custom_provider_body(self) -> None:
        """The config example (400 + error.code insufficient_quota → no_quota) works end to end."""
        adapter = make_adapter(
            "openai_like", rules=(rule(400, "error.code", "insufficient_quota", R.NO_QUOTA, 10),)
        )
        assert adapter.classify_body(400, headers_of(), QUOTA_BODY).reason is R.NO_QUOTA
        plain = make_adapter("openai_like")
        assert (
            plain.classify_body(400, headers_of(), b'{"error": {"code": "other"}}').reason
            is R.BAD_REQUEST
        )
