"""Durations: numbers of seconds or strings with a unit, parsed once at load time."""

from __future__ import annotations

import pytest

from llmgateway.config.loader import parse_duration
from tests.unit.config.conftest import LoadText


class TestParseDuration:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("250ms", 0.25),
            ("90s", 90.0),
            ("30m", 1800.0),
            ("24h", 86400.0),
            ("10d", 864000.0),
            ("0.1s", 0.1),
            ("1.5h", 5400.0),
            (" 5s ", 5.0),
            ("45", 45.0),
        ],
    )
    def test_units(self, text: str, seconds: float) -> None:
        """Each unit multiplies the number into seconds; no unit means seconds."""
        assert parse_duration(text) == pytest.approx(seconds)

    @pytest.mark.parametrize(("value", "seconds"), [(5, 5.0), (2.5, 2.5), (0, 0.0), (-3, -3.0)])
    def test_numbers_are_seconds(self, value: float, seconds: float) -> None:
        """A bare number is a count of seconds, returned as a float (sign judged by the validator)."""
        result = parse_duration(value)
        assert result == seconds
        assert isinstance(result, float)

    def test_negative_string_parses_for_the_validator_to_refuse(self) -> None:
        """A signed string parses to a negative number instead of an unreadable-value error."""
        assert parse_duration("-5s") == -5.0

    @pytest.mark.parametrize(
        "value", ["5 minutes", "1w", "abc", "", "s", "5sm", True, None, [], "inf"]
    )
    def test_rejects_garbage(self, value: object) -> None:
        """Anything else raises ValueError naming the value and the accepted forms."""
        with pytest.raises(ValueError, match="not a duration") as caught:
            parse_duration(value)
        assert '"250ms"' in str(caught.value)

    def test_rejects_infinity(self) -> None:
        """A non-finite number is not a duration."""
        with pytest.raises(ValueError, match="finite"):
            parse_duration(float("inf"))


class TestDurationsInConfig:
    def test_loaded_as_seconds(self, load_text: LoadText) -> None:
        """Durations in the file reach the dataclasses as float seconds."""
        config = load_text("""
            keeper: {keys_sync_interval: "250ms"}
            logging: {summary_interval: 90}
            providers:
              p:
                provider_type: gemini
                access_control: {gateway_access_token: tok-0123456789abcdef}
                timeouts: {total: "2h"}
                health_policy: {on_invalid_key: "3d"}
            """)
        assert config.keeper.keys_sync_interval == 0.25
        assert config.logging.summary_interval == 90.0
        assert config.providers["p"].timeouts.total == 7200.0
        assert config.providers["p"].health_policy.on_invalid_key == 3 * 86400.0

    def test_zero_backoff_is_allowed(self, load_text: LoadText) -> None:
        """A retry backoff (a delay, not an interval) may be zero."""
        config = load_text("""
            providers:
              p:
                provider_type: gemini
                access_control: {gateway_access_token: tok-0123456789abcdef}
                gateway_policy: {retry: {on_key_error: {backoff: 0}}}
            """)
        assert config.providers["p"].gateway_policy.retry.on_key_error.backoff == 0.0
