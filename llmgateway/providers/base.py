"""The provider adapter interface: what llmgateway must know about one API family.

One adapter object per provider instance, built at start-up from its
`ProviderConfig`: its error rules are compiled then, so nothing on the request
path compiles or sorts anything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from multidict import CIMultiDict, CIMultiDictProxy

from llmgateway.config.schemas import ProviderConfig
from llmgateway.core.constants import ProviderType
from llmgateway.core.models import CheckResult

CREDENTIAL_HEADERS: Final = ("Authorization", "x-api-key", "x-goog-api-key", "Proxy-Authorization")
"""Every header that may carry a client credential; none is ever forwarded upstream."""

MAX_ERROR_BODY = 64 * 1024
"""At most this many bytes of an upstream error body are inspected."""


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """The cheapest real generation that proves a key works for a model."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """A gateway-made error in the provider's native shape."""

    status: int
    body: bytes
    headers: Mapping[str, str]


class ProviderAdapter(ABC):
    """Knows one API family: key placement, model extraction, probes, error shapes.

    Subclasses are built once per instance with its config; every method is
    safe to call on the request path (no I/O, no compilation).
    """

    provider_type: ProviderType

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    @abstractmethod
    def apply_key(self, headers: CIMultiDict[str], key: str) -> None:
        """Set the real upstream key on outgoing `headers` the provider's way."""

    @abstractmethod
    def extract_model(self, path: str, body: bytes) -> str:
        """The model a client request asks for, or "" when it names none.

        Never raises: malformed JSON, no body or no model give "".
        """

    @abstractmethod
    def probe_request(self, model: str, key: str) -> ProbeRequest:
        """The probe for `model` with `key` set, honouring `probe_path`/`test_payload`."""

    @abstractmethod
    def classify_status(self, status: int, headers: CIMultiDictProxy[str]) -> CheckResult | None:
        """Decide from the status line and headers alone, or None when the body is needed.

        2xx → success; a `fast_status_mapping` entry → its reason. The body is
        never read here.
        """

    @abstractmethod
    def classify_body(
        self, status: int, headers: CIMultiDictProxy[str], body: bytes
    ) -> CheckResult:
        """Classify an error response from its (first 64 KiB of) body.

        The instance's `error_parsing` rules first, then the built-in defaults
        of the provider type; a non-JSON, empty or truncated body falls back
        to the status-code default. Never raises.
        """

    @abstractmethod
    def classify_stream_event(self, data: bytes) -> CheckResult | None:
        """Classify an in-band error inside a 200 stream chunk, or None if it holds none."""

    @abstractmethod
    def error_body(self, status: int, message: str, retry_after: float | None = None) -> ErrorBody:
        """A gateway-made error (401, 413, 429, 502, 503, 504) in this provider's shape."""
