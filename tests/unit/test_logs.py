"""Logging: key masking as the last processor, formats, level filtering."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator

import pytest
import structlog
from aiohttp.http_exceptions import BadHttpMessage

from llmgateway.config.schemas import LoggingConfig
from llmgateway.core.logs import (
    MalformedRequestFilter,
    SecretMasker,
    configure_logging,
    mask_key,
    update_secrets,
)

KEY = "sk-abcdefghijklmnop9f3k"
TOKEN = "gw-token-0123456789"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Put structlog and the root logger back as they were after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    factory, hook, thread_hook = logging.getLogRecordFactory(), sys.excepthook, threading.excepthook
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.setLogRecordFactory(factory)
    logging.captureWarnings(False)
    sys.excepthook, threading.excepthook = hook, thread_hook


class TestMaskKey:
    def test_long_key(self) -> None:
        """A long key shows its first 4 and last 4 characters around `...`."""
        assert mask_key("sk-a1234567890xyz9f3k") == "sk-a...9f3k"

    @pytest.mark.parametrize("key", ["", "a", "123456789012"])
    def test_short_key(self, key: str) -> None:
        """Keys of 12 characters or fewer are fully hidden."""
        assert mask_key(key) == "***"

    def test_thirteen_characters(self) -> None:
        """A 13-character key is the shortest shown partially."""
        assert mask_key("1234567890abc") == "1234...0abc"


class TestSecretMasker:
    def test_masks_strings_at_any_depth(self) -> None:
        """Secrets inside strings, nested dicts, lists and tuples are replaced by their mask."""
        masker = SecretMasker([KEY, TOKEN])
        event = {
            "event": f"calling with {KEY}",
            "headers": {"Authorization": f"Bearer {TOKEN}"},
            "tried": [KEY, ("x", KEY)],
            "n": 3,
        }
        out = masker(None, "info", event)
        assert out == {
            "event": "calling with sk-a...9f3k",
            "headers": {"Authorization": "Bearer gw-t...6789"},
            "tried": ["sk-a...9f3k", ("x", "sk-a...9f3k")],
            "n": 3,
        }

    def test_masks_objects_through_str(self) -> None:
        """An object whose text contains a secret (an exception) is replaced by its masked text."""
        masker = SecretMasker([KEY])
        out = masker(None, "error", {"error": ValueError(f"bad key {KEY}")})
        assert out["error"] == "bad key sk-a...9f3k"

    def test_leaves_clean_objects_alone(self) -> None:
        """Objects without secrets keep their type."""
        marker = object()
        assert SecretMasker([KEY])(None, "info", {"o": marker})["o"] is marker

    def test_longest_secret_first(self) -> None:
        """A secret containing another secret is masked whole, not in pieces."""
        short, long = "abcdefghijklm", "abcdefghijklm-and-more-text"
        out = SecretMasker([short, long])(None, "info", {"event": long})
        assert out["event"] == mask_key(long)

    def test_no_secrets_passes_through(self) -> None:
        """Without secrets the event is returned unchanged."""
        event = {"event": "hello"}
        assert SecretMasker([])(None, "info", event) is event

    def test_regex_characters_in_secrets(self) -> None:
        """Secrets are matched literally, even with regex metacharacters."""
        secret = "a.b*c+d?e(f)g[h]i"
        out = SecretMasker([secret])(None, "info", {"event": "a.b*c+d?e(f)g[h]i and axbxc"})
        assert out["event"] == f"{mask_key(secret)} and axbxc"

    def test_secrets_inside_longer_words_are_masked(self) -> None:
        """A key glued to other token characters (`xsk-…`, `sk-….`) is still found and masked."""
        out = SecretMasker([KEY])(None, "info", {"event": f"key=x{KEY}. and api_key:{KEY}_"})
        assert out["event"] == "key=xsk-a...9f3k. and api_key:sk-a...9f3k_"

    def test_many_keys_are_all_masked(self) -> None:
        """With thousands of keys of several lengths, any of them is masked wherever it stands."""
        keys = [f"sk-proj-{i:06d}-{'x' * (i % 7)}abcdefgh" for i in range(5000)]
        masker = SecretMasker(keys)
        text = f"tried {keys[17]}, {keys[4999]} and sk-proj-not-a-known-key-at-all"
        assert masker.mask_text(text) == (
            f"tried {mask_key(keys[17])}, {mask_key(keys[4999])} "
            "and sk-proj-not-a-known-key-at-all"
        )

    def test_plain_and_other_secrets_together(self) -> None:
        """Token-character keys and a hand-written token with other characters are both masked."""
        odd = "my gateway token!"
        masker = SecretMasker([KEY, odd])
        assert masker.mask_text(f"{odd} / {KEY}") == f"{mask_key(odd)} / sk-a...9f3k"

    def test_update_adds_secrets(self) -> None:
        """update_secrets adds to the masked set and ignores empty strings."""
        masker = SecretMasker([KEY])
        masker.update_secrets(["", TOKEN])
        assert masker.secret_count == 2
        assert (
            masker(None, "info", {"event": f"{KEY} {TOKEN}"})["event"] == "sk-a...9f3k gw-t...6789"
        )


class TestConfigureLogging:
    def test_json_output_is_masked(self, capsys: pytest.CaptureFixture[str]) -> None:
        """JSON logs are one object per line and carry no configured secret."""
        configure_logging(LoggingConfig(format="json"), [KEY])
        structlog.get_logger("t").info("probe", key=KEY, url=f"https://x/?key={KEY}")
        record = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert record["event"] == "probe" and record["level"] == "info"
        assert record["key"] == "sk-a...9f3k" and KEY not in json.dumps(record)

    def test_console_output_is_masked(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Console logs are masked too, exceptions included."""
        configure_logging(LoggingConfig(format="console"), [KEY])
        try:
            raise RuntimeError(f"upstream refused {KEY}")
        except RuntimeError:
            structlog.get_logger().exception("failed", key=KEY)
        err = capsys.readouterr().err
        assert "failed" in err and "sk-a...9f3k" in err and KEY not in err

    def test_level_filtering(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Events below the configured level are dropped."""
        configure_logging(LoggingConfig(level="warning", format="json"), [])
        log = structlog.get_logger()
        log.info("quiet")
        log.warning("loud")
        lines = capsys.readouterr().err.strip().splitlines()
        assert [json.loads(line)["event"] for line in lines] == ["loud"]

    def test_update_secrets_reaches_configured_masker(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Keys added after start-up (from key files) are masked from then on."""
        configure_logging(LoggingConfig(format="json"), [])
        update_secrets([KEY])
        structlog.get_logger().info("loaded", key=KEY)
        assert KEY not in capsys.readouterr().err

    def test_stdlib_logging_is_masked(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Records of stdlib loggers (aiohttp's) go through the same masker."""
        configure_logging(LoggingConfig(format="json"), [TOKEN])
        logging.getLogger("aiohttp.server").warning("GET /v1beta?key=%s", TOKEN)
        out = capsys.readouterr().err
        assert "gw-t...6789" in out and TOKEN not in out

    def test_reconfigure_does_not_duplicate_handlers(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Configuring twice leaves one handler of ours, so lines are not doubled."""
        configure_logging(LoggingConfig(format="json"), [])
        configure_logging(LoggingConfig(format="json"), [])
        logging.getLogger("x").warning("once")
        assert capsys.readouterr().err.count("once") == 1


def _bad_request_record() -> logging.LogRecord:
    """The record aiohttp logs for a request it cannot parse (with its traceback)."""
    try:
        raise BadHttpMessage("Invalid header token: b'sk-client-sent-this-0123456789'")
    except BadHttpMessage:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("203.0.113.7",),
        exc_info,
    )


class TestMalformedRequestFilter:
    def test_one_short_warning_without_traceback(self) -> None:
        """A malformed request becomes one WARNING naming the address and the kind, no traceback."""
        record = _bad_request_record()
        assert MalformedRequestFilter(logging.INFO).filter(record)
        assert record.levelno == logging.WARNING and record.exc_info is None
        assert record.getMessage() == (
            "malformed client request from 203.0.113.7 refused (BadHttpMessage)"
        )

    def test_lines_are_rate_limited_and_the_suppressed_ones_counted(self) -> None:
        """Past the limit lines are dropped; the first line of the next minute says how many."""
        now = [0.0]
        guard = MalformedRequestFilter(logging.INFO, per_minute=3, clock=lambda: now[0])
        kept = [guard.filter(_bad_request_record()) for _ in range(8)]
        now[0] = 61.0
        record = _bad_request_record()
        assert kept == [True] * 3 + [False] * 5
        assert guard.filter(record)
        assert record.getMessage().endswith("; 5 more suppressed before this one")

    def test_other_records_pass_untouched(self) -> None:
        """Anything but a malformed request keeps its level, text and traceback."""
        record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "boom", (), None)
        assert MalformedRequestFilter(logging.INFO).filter(record)
        assert record.levelno == logging.ERROR and record.getMessage() == "boom"

    def test_silent_when_warnings_are_not_logged(self) -> None:
        """At level error the WARNING line is not written at all."""
        assert not MalformedRequestFilter(logging.ERROR).filter(_bad_request_record())


class TestEveryStdlibRecordIsMasked:
    def test_third_party_logger_with_its_own_handler(self) -> None:
        """A record is masked when made, so even a handler that is not ours never sees the key."""
        configure_logging(LoggingConfig(level="debug", format="json"), [KEY])
        seen: list[str] = []

        class Collect(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append(self.format(record))

        lonely = logging.getLogger("some.library")
        lonely.propagate = False
        handler = Collect()
        lonely.addHandler(handler)
        try:
            lonely.debug("executing %s", ("INSERT", [KEY]))
            try:
                raise ValueError(f"bad {KEY}")
            except ValueError:
                lonely.exception("failed")
        finally:
            lonely.removeHandler(handler)
            lonely.propagate = True
        assert len(seen) == 2 and all(KEY not in line for line in seen)
        assert "sk-a...9f3k" in seen[0] and "sk-a...9f3k" in seen[1]
