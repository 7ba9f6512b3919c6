"""Logging set-up: structlog for our events, stdlib logging routed through the same chain.

The last processor before rendering is `SecretMasker`: whatever a careless log
call puts into an event, no configured key or token leaves the process unmasked.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, Final

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from llmgateway.config.schemas import LoggingConfig

LEVELS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
"""The accepted `logging.level` values and their stdlib numbers."""

FORMATS: Final = ("console", "json")
"""The accepted `logging.format` values."""

_SHORT_KEY: Final = 12


def mask_key(key: str) -> str:
    """Mask a key or token for display.

    The first 4 characters, `...`, and the last 4 (`sk-a...9f3k`); keys of 12
    characters or fewer become `***` because showing 8 of them would reveal too much.
    """
    if len(key) <= _SHORT_KEY:
        return "***"
    return f"{key[:4]}...{key[-4:]}"


class SecretMasker:
    """structlog processor replacing every known secret in an event by its mask.

    Every string value, at any depth of dicts, lists and tuples, is searched
    with one compiled alternation of the secrets (longest first, so a secret
    containing another is masked whole). Other objects are masked through their
    `str()` only when that text contains a secret. Without secrets the event
    passes untouched.
    """

    __slots__ = ("_masks", "_pattern")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._masks: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None
        self.update_secrets(secrets)

    @property
    def secret_count(self) -> int:
        """How many distinct secrets are masked."""
        return len(self._masks)

    def update_secrets(self, secrets: Iterable[str]) -> None:
        """Add `secrets` to the masked set (empty strings are ignored).

        The new pattern is swapped in with one assignment, so a concurrent log
        call sees either the old or the new set, never a broken one.
        """
        masks = dict(self._masks)
        for secret in secrets:
            if secret and secret not in masks:
                masks[secret] = mask_key(secret)
        if len(masks) == len(self._masks):
            return
        ordered = sorted(masks, key=len, reverse=True)
        self._masks = masks
        self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def mask_text(self, text: str) -> str:
        """`text` with every known secret replaced by its mask."""
        pattern = self._pattern
        if pattern is None:
            return text
        masks = self._masks
        return pattern.sub(lambda m: masks.get(m.group(), "***"), text)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """Mask every secret in `event_dict` (in place) and return it."""
        if self._pattern is None:
            return event_dict
        for key, value in event_dict.items():
            event_dict[key] = self._mask_value(value)
        return event_dict

    def _mask_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.mask_text(value)
        if value is None or isinstance(value, int | float | bool):
            return value
        if isinstance(value, dict):
            return {k: self._mask_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._mask_value(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._mask_value(v) for v in value)
        text = str(value)
        masked = self.mask_text(text)
        return value if masked == text else masked


def _renderer(fmt: str) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer(serializer=_dumps)
    return structlog.dev.ConsoleRenderer(
        colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
    )


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def configure_logging(config: LoggingConfig, secrets: Iterable[str]) -> None:
    """Configure structlog and the stdlib root logger from the `logging` section.

    Both go through the same processors and end with one `SecretMasker`
    holding `secrets`; `update_secrets` adds more later. Events below
    `config.level` are dropped before any processor runs.
    """
    level = LEVELS.get(config.level, logging.INFO)
    masker = SecretMasker(secrets)
    renderer = _renderer(config.format)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, masker, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, masker, renderer],
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
    access = logging.getLogger("aiohttp.access")
    access.disabled = not config.access_log


def active_maskers() -> list[SecretMasker]:
    """The `SecretMasker` processors of the current structlog configuration."""
    processors: list[Any] = structlog.get_config().get("processors", [])
    return [p for p in processors if isinstance(p, SecretMasker)]


def update_secrets(secrets: Iterable[str]) -> None:
    """Add `secrets` (e.g. keys just read from key files) to the configured masker.

    The masker lives in structlog's configuration (no global of ours); the
    stdlib handler shares the same object, so one update covers both.
    """
    wanted = list(secrets)
    for masker in active_maskers():
        masker.update_secrets(wanted)
