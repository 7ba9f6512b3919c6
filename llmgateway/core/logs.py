"""Logging set-up: structlog for our events, stdlib logging routed through the same chain.

The last processor before rendering is `SecretMasker`: whatever a careless log
call puts into an event, no configured key or token leaves the process unmasked.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
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


_TOKEN_CHARS: Final = "A-Za-z0-9_.\\-"
_PLAIN_SECRET: Final = re.compile(f"[{_TOKEN_CHARS}]+")


@dataclass(frozen=True, slots=True)
class _SecretIndex:
    """The secrets of a masker, arranged for fast search (immutable, swapped whole).

    API keys and most tokens are made of `[A-Za-z0-9_.-]`: those are found by
    scanning the text's runs of such characters and looking them up in a set,
    which costs the same for 10 keys or 100,000. Any other secret goes into one
    regex alternation (few: hand-written gateway tokens).
    """

    masks: dict[str, str]
    plain: frozenset[str]
    lengths: tuple[int, ...]
    runs: re.Pattern[str] | None
    other: re.Pattern[str] | None

    @classmethod
    def of(cls, masks: dict[str, str]) -> _SecretIndex:
        plain = frozenset(s for s in masks if _PLAIN_SECRET.fullmatch(s))
        other = sorted((s for s in masks if s not in plain), key=len, reverse=True)
        lengths = tuple(sorted({len(s) for s in plain}, reverse=True))
        return cls(
            masks=masks,
            plain=plain,
            lengths=lengths,
            runs=re.compile(f"[{_TOKEN_CHARS}]{{{lengths[-1]},}}") if lengths else None,
            other=re.compile("|".join(re.escape(s) for s in other)) if other else None,
        )

    def mask_text(self, text: str) -> str:
        if self.other is not None:
            masks = self.masks
            text = self.other.sub(lambda m: masks.get(m.group(), "***"), text)
        if self.runs is not None:
            text = self.runs.sub(self._mask_run, text)
        return text

    def _mask_run(self, match: re.Match[str]) -> str:
        run = match.group()
        if run in self.plain:
            return self.masks[run]
        # A secret inside a longer run (`xsk-…`, `sk-….`): longest match at each position.
        parts: list[str] = []
        start = position = 0
        shortest = self.lengths[-1]
        size = len(run)
        while position <= size - shortest:
            for length in self.lengths:
                candidate = run[position : position + length]
                if len(candidate) == length and candidate in self.plain:
                    parts += (run[start:position], self.masks[candidate])
                    position = start = position + length
                    break
            else:
                position += 1
        if not parts:
            return run
        parts.append(run[start:])
        return "".join(parts)


_EMPTY_INDEX: Final = _SecretIndex.of({})


class SecretMasker:
    """structlog processor replacing every known secret in an event by its mask.

    Every string value, at any depth of dicts, lists and tuples, is searched
    for the secrets (a secret containing another is masked whole). Other
    objects are masked through their `str()` only when that text contains a
    secret. Without secrets the event passes untouched. The search costs the
    same whatever the number of keys (see `_SecretIndex`).
    """

    __slots__ = ("_index",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._index = _EMPTY_INDEX
        self.update_secrets(secrets)

    @property
    def secret_count(self) -> int:
        """How many distinct secrets are masked."""
        return len(self._index.masks)

    def update_secrets(self, secrets: Iterable[str]) -> None:
        """Add `secrets` to the masked set (empty strings are ignored).

        The new index is swapped in with one assignment, so a concurrent log
        call sees either the old or the new set, never a broken one.
        """
        current = self._index.masks
        added = {s: mask_key(s) for s in secrets if s and s not in current}
        if added:
            self._index = _SecretIndex.of(current | added)

    def mask_text(self, text: str) -> str:
        """`text` with every known secret replaced by its mask."""
        return self._index.mask_text(text)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """Mask every secret in `event_dict` (in place) and return it."""
        if not self._index.masks:
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
