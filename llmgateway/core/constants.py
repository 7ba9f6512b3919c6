"""Enumerations and markers shared by every part of llmgateway.

The values of these enums are the strings written to the database, the status
document and the configuration file: parse them once, at the edges, and use the
members everywhere else.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

ALL_MODELS_MARKER: Final = "__ALL_MODELS__"
"""Model name under which a key's status is kept when `shared_key_status` is true."""


class ErrorReason(StrEnum):
    """Why a call with a key failed, as classified from the upstream's answer.

    The predicates split the reasons into the classes that steer the keeper's
    re-verification and the gateway's retries and penalties.
    """

    UNKNOWN = "unknown"
    NETWORK_ERROR = "network_error"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"
    SERVICE_UNAVAILABLE = "service_unavailable"
    OVERLOADED = "overloaded"
    STREAM_DISCONNECT = "stream_disconnect"
    BAD_REQUEST = "bad_request"
    INVALID_KEY = "invalid_key"
    NO_ACCESS = "no_access"
    RATE_LIMITED = "rate_limited"
    NO_QUOTA = "no_quota"
    NO_MODEL = "no_model"

    @property
    def is_retryable(self) -> bool:
        """True when trying again later (or with another key) may succeed."""
        return self in _RETRYABLE

    @property
    def is_fatal(self) -> bool:
        """True when the key is unusable for its scope until it is re-checked."""
        return self in _FATAL

    @property
    def is_server_error(self) -> bool:
        """True for provider-side or network failures, never the key's fault."""
        return self in _SERVER_SIDE

    @property
    def is_key_wide(self) -> bool:
        """True when the failure condemns the key for every model of its instance.

        `invalid_key` and `no_access` are properties of the key; `no_quota`,
        `no_model` and `rate_limited` only concern the (key, model) pair.
        """
        return self in _KEY_WIDE


_RETRYABLE: Final = frozenset(
    {
        ErrorReason.NETWORK_ERROR,
        ErrorReason.TIMEOUT,
        ErrorReason.SERVER_ERROR,
        ErrorReason.SERVICE_UNAVAILABLE,
        ErrorReason.OVERLOADED,
        ErrorReason.STREAM_DISCONNECT,
        ErrorReason.RATE_LIMITED,
    }
)
_FATAL: Final = frozenset(
    {ErrorReason.INVALID_KEY, ErrorReason.NO_ACCESS, ErrorReason.NO_QUOTA, ErrorReason.NO_MODEL}
)
_SERVER_SIDE: Final = frozenset(
    {
        ErrorReason.NETWORK_ERROR,
        ErrorReason.TIMEOUT,
        ErrorReason.SERVER_ERROR,
        ErrorReason.SERVICE_UNAVAILABLE,
        ErrorReason.OVERLOADED,
        ErrorReason.STREAM_DISCONNECT,
    }
)
_KEY_WIDE: Final = frozenset({ErrorReason.INVALID_KEY, ErrorReason.NO_ACCESS})


class Status(StrEnum):
    """The recorded state of a key for a model: untested, valid, verifying, or a failure reason.

    `verifying` is a fatal reason seen on client traffic and not yet confirmed
    by the keeper's own probe: the key is out of the pool for the reason's
    scope and is probed within `confirm_within`; the suspected reason is kept
    beside it (`KeyRecord.reason`). `disabled` is set by hand on every model
    of a key: the key is out of the pool and never probed until enabled.
    """

    UNTESTED = "untested"
    VALID = "valid"
    VERIFYING = "verifying"
    DISABLED = "disabled"
    UNKNOWN = "unknown"
    NETWORK_ERROR = "network_error"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"
    SERVICE_UNAVAILABLE = "service_unavailable"
    OVERLOADED = "overloaded"
    STREAM_DISCONNECT = "stream_disconnect"
    BAD_REQUEST = "bad_request"
    INVALID_KEY = "invalid_key"
    NO_ACCESS = "no_access"
    RATE_LIMITED = "rate_limited"
    NO_QUOTA = "no_quota"
    NO_MODEL = "no_model"

    @classmethod
    def of(cls, reason: ErrorReason | None) -> Status:
        """The status recorded for a check that ended with `reason` (None: success)."""
        return cls.VALID if reason is None else cls(reason.value)

    @property
    def reason(self) -> ErrorReason | None:
        """The ErrorReason this status stands for (None: untested, valid, verifying, disabled)."""
        if self in _NO_REASON:
            return None
        return ErrorReason(self.value)

    @property
    def is_usable(self) -> bool:
        """True when the gateway may route requests with a key in this status.

        Untested keys are used optimistically; a key whose last check failed on
        the provider's side (or was rate limited, handled by cool-downs) is not
        the key's fault and stays usable. A key being verified, or disabled, is not.
        """
        return self in _USABLE


_NO_REASON: Final = frozenset({Status.UNTESTED, Status.VALID, Status.VERIFYING, Status.DISABLED})
_USABLE: Final = frozenset(
    s
    for s in Status
    if s not in (Status.VERIFYING, Status.DISABLED) and (s.reason is None or not s.reason.is_fatal)
)


class ProviderType(StrEnum):
    """The API family a provider instance speaks."""

    OPENAI_LIKE = "openai_like"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"


class StreamingMode(StrEnum):
    """Whether responses are relayed chunk by chunk (auto) or buffered whole (disabled)."""

    AUTO = "auto"
    DISABLED = "disabled"
