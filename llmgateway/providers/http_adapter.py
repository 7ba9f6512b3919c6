"""The shared machinery of the JSON-over-HTTP adapters: keys, probes, classification.

`HttpAdapter` implements the `ProviderAdapter` contract once; the three
provider modules supply class-level data (key header, built-in tables) and a
few hooks (retry-after sources, in-band stream errors, the native error shape).
Everything that can be prepared is prepared in `__init__`.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from llmgateway.config.defaults import TYPE_DEFAULTS, default_probe_payload, render_probe_path
from llmgateway.config.schemas import ProviderConfig
from llmgateway.core.constants import ErrorReason
from llmgateway.core.masking import Masker
from llmgateway.core.models import CHECK_OK, CheckResult
from llmgateway.providers.base import (
    CREDENTIAL_HEADERS,
    MAX_ERROR_BODY,
    ErrorBody,
    ProbeRequest,
    ProviderAdapter,
)
from llmgateway.providers.error_defaults import builtin_defaults
from llmgateway.providers.error_rules import CompiledRules, first_text
from llmgateway.providers.retry_after import Clock, header_retry_after

MAX_MESSAGE_CHARS: Final = 500
"""Messages kept in a CheckResult are cut to this length."""

STREAM_ERROR_STATUS: Final = 500
"""The nominal status used to classify an in-band stream error that carries no code."""

_MESSAGE_PATH: Final = ("error", "message")
_MASK_MARGIN: Final = 1024
"""Characters beyond a message's cut that are masked too (a key there may straddle the cut)."""


def strip_credentials(headers: CIMultiDict[str]) -> None:
    """Remove every header that may carry a client credential (all occurrences)."""
    for name in CREDENTIAL_HEADERS:
        headers.popall(name, None)


def parse_json(data: bytes) -> Any | None:
    """The parsed JSON document in `data`, or None when it is empty or not valid JSON."""
    if not data:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _sse_payloads(data: bytes) -> Iterator[bytes]:
    """The `data:` payloads of an SSE chunk that mention "error" (or the chunk itself as JSON)."""
    found_data_line = False
    for line in data.split(b"\n"):
        if line.startswith(b"data:"):
            found_data_line = True
            if b"error" in line:
                yield line[5:].strip()
    if not found_data_line:
        # Non-SSE streaming (Gemini without alt=sse streams one JSON array).
        yield data.strip().strip(b"[],\r\n ")


class HttpAdapter(ProviderAdapter):
    """A provider adapter for a JSON API; subclasses set the key placement and hooks."""

    key_header: ClassVar[str]
    """The header the real upstream key goes in."""
    key_prefix: ClassVar[str] = ""
    """Written before the key in `key_header` (e.g. "Bearer ")."""

    def __init__(
        self, config: ProviderConfig, *, clock: Clock = time.time, masker: Masker | None = None
    ) -> None:
        super().__init__(config)
        self._clock = clock
        self._masker = masker
        policy = config.gateway_policy
        self._fast_status: Mapping[int, ErrorReason] = MappingProxyType(
            dict(policy.fast_status_mapping)
        )
        parsing = policy.error_parsing
        self._user_rules = CompiledRules(parsing.rules if parsing.enabled else ())
        self._defaults = builtin_defaults(self.provider_type)
        self._probe_headers: Mapping[str, str] = MappingProxyType(self.probe_headers())
        models = {config.default_model, *config.models} - {""}
        self._probes: Mapping[str, tuple[str, bytes]] = MappingProxyType(
            {model: self._build_probe(model) for model in models}
        )

    # --- keys --------------------------------------------------------------------------------

    def apply_key(self, headers: CIMultiDict[str], key: str) -> None:
        """Strip every client credential from `headers`, then set the real key."""
        strip_credentials(headers)
        if self._masker is not None:
            self._masker.remember(key)  # known to the masker before any upstream sees it
        headers[self.key_header] = self.key_prefix + key

    # --- probes ------------------------------------------------------------------------------

    def probe_headers(self) -> dict[str, str]:
        """The static headers of every probe of this instance (the key is added per probe)."""
        return {"Content-Type": "application/json"}

    def _build_probe(self, model: str) -> tuple[str, bytes]:
        override = self.config.models.get(model)
        template = TYPE_DEFAULTS[self.provider_type].probe_path
        payload: dict[str, Any] = default_probe_payload(self.provider_type, model)
        if override is not None:
            if override.probe_path:
                template = override.probe_path
            if override.test_payload is not None:
                payload = override.test_payload
        return render_probe_path(template, model), orjson.dumps(payload)

    def probe_request(self, model: str, key: str) -> ProbeRequest:
        """The probe for `model` with `key` set, honouring `probe_path`/`test_payload`."""
        built = self._probes.get(model)
        path, body = built if built is not None else self._build_probe(model)
        headers = dict(self._probe_headers)
        if self._masker is not None:
            self._masker.remember(key)
        headers[self.key_header] = self.key_prefix + key
        return ProbeRequest(method="POST", path=path, headers=headers, body=body)

    # --- classification ----------------------------------------------------------------------

    def classify_status(self, status: int, headers: CIMultiDictProxy[str]) -> CheckResult | None:
        """2xx → success; a `fast_status_mapping` entry → its reason; else None (read the body)."""
        if 200 <= status <= 299:
            return CHECK_OK if status == 200 else CheckResult(reason=None, status_code=status)
        reason = self._fast_status.get(status)
        if reason is None:
            return None
        return CheckResult(
            reason=reason,
            status_code=status,
            message=f"HTTP {status} (fast_status_mapping)",
            retry_after=self.retry_after(headers, None),
        )

    def classify_body(
        self, status: int, headers: CIMultiDictProxy[str], body: bytes
    ) -> CheckResult:
        """User rules, then the type's built-in tables, then the status default. Never raises."""
        if 200 <= status <= 299:
            return CheckResult(reason=None, status_code=status)
        data = bytes(body[:MAX_ERROR_BODY])
        parsed = self.error_document(parse_json(data))
        reason = self._user_rules.match(status, parsed) if parsed is not None else None
        if reason is None:
            reason = self._defaults.classify(status, parsed)
        return CheckResult(
            reason=reason,
            status_code=status,
            message=_message(status, parsed, data, self.mask),
            retry_after=self.retry_after(headers, parsed),
        )

    def classify_stream_event(self, data: bytes) -> CheckResult | None:
        """Classify an in-band error of a 200 stream chunk; cheap when there is none."""
        if b"error" not in data:
            return None
        for payload in _sse_payloads(data):
            doc = self.error_document(parse_json(payload))
            if doc is None or not self.is_stream_error(doc):
                continue
            code = first_text(doc, ("error", "code"))
            status = int(code) if code is not None and code.isdigit() else STREAM_ERROR_STATUS
            if not 400 <= status <= 599:
                status = STREAM_ERROR_STATUS
            reason = self._user_rules.match(status, doc) or self._defaults.classify(status, doc)
            text = first_text(doc, _MESSAGE_PATH) or "error event in stream"
            return CheckResult(
                reason=reason,
                status_code=200,
                message=self.mask(f"stream error: {text}")[:MAX_MESSAGE_CHARS],
                retry_after=self.retry_after(CIMultiDictProxy(CIMultiDict()), doc),
            )
        return None

    def mask(self, text: str) -> str:
        """`text` from an upstream answer with every known secret masked (before it is kept)."""
        return self._masker.mask_text(text) if self._masker is not None else text

    def error_document(self, parsed: Any) -> Any | None:
        """The error object of a parsed body: a dict, or None when there is none to inspect."""
        if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
            parsed = parsed[0]  # streamGenerateContent without alt=sse answers a JSON array
        return parsed if isinstance(parsed, dict) else None

    def is_stream_error(self, doc: Mapping[str, Any]) -> bool:
        """True when a parsed stream event is an error (default: it holds an `error` object)."""
        return isinstance(doc.get("error"), dict)

    def retry_after(self, headers: Mapping[str, str], parsed: Any | None) -> float | None:
        """Seconds the provider asks to wait, from headers (and the body where it says so)."""
        return header_retry_after(headers, self._clock())

    # --- gateway-made errors -----------------------------------------------------------------

    @abstractmethod
    def error_json(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        """The provider's native error document for a gateway-made error."""

    def error_body(self, status: int, message: str, retry_after: float | None = None) -> ErrorBody:
        """A gateway-made error in this provider's JSON shape, with Retry-After when given."""
        headers = {"Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = str(max(0, math.ceil(retry_after)))
        body = orjson.dumps(self.error_json(status, message, retry_after))
        return ErrorBody(status=status, body=body, headers=headers)


def _message(status: int, parsed: Any | None, data: bytes, mask: Callable[[str], str]) -> str:
    """The upstream's own error message, else a short snippet of the raw body; masked, then cut.

    Masking comes before cutting, so that a key at the cut is never left half shown.
    """
    if parsed is not None:
        text = first_text(parsed, _MESSAGE_PATH)
        if text:
            return mask(text[: MAX_MESSAGE_CHARS + _MASK_MARGIN])[:MAX_MESSAGE_CHARS]
    window = data[: MAX_MESSAGE_CHARS + _MASK_MARGIN].decode("utf-8", "replace")
    snippet = " ".join(mask(window).split())
    return f"HTTP {status}: {snippet}"[:MAX_MESSAGE_CHARS] if snippet else f"HTTP {status}"
