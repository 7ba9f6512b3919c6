"""Logging set-up: structlog for our events, every stdlib logger routed through the same chain.

Nothing leaves the process unmasked: the last processor before rendering is
`SecretMasker`, and every stdlib log record (aiohttp, aiosqlite, asyncpg, any
third-party logger, at every level) has its message masked the moment it is
created, whichever handler later writes it. Malformed client requests, which
need no token and could flood the log, become one rate-limited WARNING line.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Final, Protocol

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from llmgateway.core.masking import Masker, mask_key

__all__ = [
    "FORMATS",
    "LEVELS",
    "MalformedRequestFilter",
    "SecretMasker",
    "active_masker",
    "configure_logging",
    "mask_key",
    "update_secrets",
]


LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
"""The values of `logging.level`."""

LOG_FORMATS: Final = ("console", "json")
"""The values of `logging.format`."""


class LoggingOptions(Protocol):
    """What `configure_logging` reads: the `logging` section of the configuration."""

    @property
    def level(self) -> str:
        """One of LOG_LEVELS."""

    @property
    def format(self) -> str:
        """One of LOG_FORMATS."""

    @property
    def access_log(self) -> bool:
        """Whether aiohttp's access log is written."""


LEVELS: Final[dict[str, int]] = {
    name: logging.getLevelNamesMapping()[name.upper()] for name in LOG_LEVELS
}
"""The accepted `logging.level` values and their stdlib numbers."""

FORMATS: Final = LOG_FORMATS
"""The accepted `logging.format` values."""

MALFORMED_LINES_PER_MINUTE: Final = 10
"""Malformed-request WARNING lines written per minute at most; the rest are counted."""

_BASE_RECORD_FACTORY: Final = logging.getLogRecordFactory()
"""The stdlib's own record factory, wrapped by the masking one."""


class SecretMasker:
    """structlog processor replacing every known secret in an event by its mask.

    Every string value, at any depth of dicts, lists and tuples, goes through
    the process's `Masker` (raw, escaped and encoded forms). Other objects are
    masked through their `str()` only when that text contains a secret.
    Without secrets the event passes untouched.
    """

    __slots__ = ("masker",)

    def __init__(self, secrets: Iterable[str] = (), masker: Masker | None = None) -> None:
        self.masker = masker if masker is not None else Masker()
        """The secrets and the masking itself (shared with the rest of the process)."""
        self.masker.add(secrets)

    @property
    def secret_count(self) -> int:
        """How many distinct secrets are masked."""
        return len(self.masker)

    def update_secrets(self, secrets: Iterable[str]) -> None:
        """Add `secrets` to the masked set (empty strings are ignored)."""
        self.masker.add(secrets)

    def mask_text(self, text: str) -> str:
        """`text` with every known secret replaced by its mask."""
        return self.masker.mask_text(text)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """Mask every secret in `event_dict` (in place) and return it."""
        if not len(self.masker):
            return event_dict
        for key, value in event_dict.items():
            event_dict[key] = self._mask_value(value)
        return event_dict

    def _mask_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.masker.mask_text(value)
        if value is None or isinstance(value, int | float | bool):
            return value
        if isinstance(value, dict):
            return {k: self._mask_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._mask_value(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._mask_value(v) for v in value)
        text = str(value)
        masked = self.masker.mask_text(text)
        return value if masked == text else masked


def _renderer(fmt: str) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer(serializer=_dumps)
    return structlog.dev.ConsoleRenderer(
        colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
    )


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


@functools.cache
def _malformed_request_errors() -> type[Exception]:
    # Imported on first use: the commands that never serve (status, config) start faster
    # without aiohttp.
    from aiohttp.http_exceptions import HttpProcessingError

    return HttpProcessingError


class MalformedRequestFilter(logging.Filter):
    """Turns aiohttp's report of a malformed client request into one short WARNING line.

    aiohttp logs each request it cannot parse at ERROR with a traceback, and
    such a request needs no token: anyone could fill the log. Here it becomes
    `malformed client request from <address> refused (<kind>)`, no traceback,
    at most `per_minute` lines a minute; the next line written says how many
    were suppressed meanwhile. Every other record passes unchanged.
    """

    def __init__(
        self,
        level: int,
        per_minute: int = MALFORMED_LINES_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._enabled = level <= logging.WARNING
        self._per_minute = per_minute
        self._clock = clock
        self._window = float("-inf")
        self._written = 0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a suppressed line; rewrites a malformed-request record in place."""
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, _malformed_request_errors()):
            return True
        if not self._enabled:
            return False
        now = self._clock()
        if now - self._window >= 60.0:
            self._window, self._written = now, 0
        if self._written >= self._per_minute:
            self._suppressed += 1
            return False
        self._written += 1
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        message = f"malformed client request from {remote} refused ({type(exc).__name__})"
        if self._suppressed:
            message += f"; {self._suppressed} more suppressed before this one"
            self._suppressed = 0
        record.msg, record.args = message, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def _masking_record_factory(masker: Masker) -> Any:
    """A LogRecord factory masking each record's message (and traceback) as it is made."""

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = _BASE_RECORD_FACTORY(*args, **kwargs)
        if not len(masker):
            return record
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):  # a bad format string: logging reports it
            return record
        masked = masker.mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = masker.mask_text(logging.Formatter().formatException(record.exc_info))
        return record

    return make


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    logging.getLogger("llmgateway").critical("uncaught_exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def configure_logging(
    config: LoggingOptions, secrets: Iterable[str], masker: Masker | None = None
) -> Masker:
    """Configure structlog and every stdlib logger from the `logging` section.

    Both go through the same processors and end with one `SecretMasker`
    over `masker` (a new one when None) holding `secrets`; `update_secrets`
    adds more later. Stdlib records are masked when created, uncaught
    exceptions and warnings are logged (so masked) instead of printed, and
    malformed client requests are rate-limited. Events below `config.level`
    are dropped before any processor runs. Returns the masker.
    """
    level = LEVELS.get(config.level, logging.INFO)
    processor = SecretMasker(secrets, masker)
    renderer = _renderer(config.format)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, processor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            processor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "llmgateway", False):
            root.removeHandler(old)
    handler.llmgateway = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    logging.setLogRecordFactory(_masking_record_factory(processor.masker))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    server = logging.getLogger("aiohttp.server")
    for old_filter in list(server.filters):
        if isinstance(old_filter, MalformedRequestFilter):
            server.removeFilter(old_filter)
    server.addFilter(MalformedRequestFilter(level))
    access = logging.getLogger("aiohttp.access")
    access.disabled = not config.access_log
    return processor.masker


def active_maskers() -> list[SecretMasker]:
    """The `SecretMasker` processors of the current structlog configuration."""
    processors: list[Any] = structlog.get_config().get("processors", [])
    return [p for p in processors if isinstance(p, SecretMasker)]


def active_masker() -> Masker | None:
    """The `Masker` of the current logging configuration, or None when none is configured."""
    found = active_maskers()
    return found[0].masker if found else None


def update_secrets(secrets: Iterable[str]) -> None:
    """Add `secrets` (e.g. keys just read from key files) to the configured masker.

    The masker lives in the logging configuration (no global of ours); the
    stdlib side and the application share the same object, so one update
    covers every place that masks.
    """
    wanted = list(secrets)
    for masker in active_maskers():
        masker.update_secrets(wanted)
