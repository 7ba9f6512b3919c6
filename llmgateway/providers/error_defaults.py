"""Built-in error knowledge of each provider type, written as data.

Each table cites the documented body it is for (see tests/fixtures/provider_errors.py
for full examples). `builtin_defaults()` compiles a type's tables once, when an
adapter is built; the user's `error_parsing` rules are always tried before these.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, assert_never

from llmgateway.config.schemas import ErrorRule
from llmgateway.core.constants import ErrorReason as R
from llmgateway.core.constants import ProviderType
from llmgateway.providers.error_rules import BuiltinDefaults, CompiledRules, SymbolTable, split_path

COMMON_STATUS_REASONS: Final[Mapping[int, R]] = MappingProxyType(
    {
        400: R.BAD_REQUEST,
        401: R.INVALID_KEY,
        402: R.NO_QUOTA,  # Payment Required: DeepSeek "Insufficient Balance", OpenRouter credits
        403: R.NO_ACCESS,
        404: R.NO_MODEL,
        408: R.TIMEOUT,
        413: R.BAD_REQUEST,
        422: R.BAD_REQUEST,
        429: R.RATE_LIMITED,
        500: R.SERVER_ERROR,
        502: R.SERVER_ERROR,
        503: R.SERVICE_UNAVAILABLE,
        504: R.TIMEOUT,
        529: R.OVERLOADED,
    }
)
"""What a bare status code means when the body says nothing more."""

# --- OpenAI and compatible APIs: {"error": {"message", "type", "param", "code"}} -----------

OPENAI_RULES: Final = (
    # {"message": "Invalid URL (POST /v1/chat/completionz)", "code": null}: the client's path.
    ErrorRule(404, "error.message", r"^Invalid URL", R.BAD_REQUEST, 10, "unknown endpoint"),
    # Compatible servers that omit the code but keep OpenAI's wording.
    ErrorRule(429, "error.message", r"exceeded your current quota", R.NO_QUOTA, 5, "quota"),
)
OPENAI_SYMBOLS: Final = (
    SymbolTable(
        split_path("error.code"),
        MappingProxyType(
            {
                "invalid_api_key": R.INVALID_KEY,
                "account_deactivated": R.INVALID_KEY,
                "insufficient_quota": R.NO_QUOTA,
                "billing_hard_limit_reached": R.NO_QUOTA,
                "rate_limit_exceeded": R.RATE_LIMITED,
                "model_not_found": R.NO_MODEL,
                "unsupported_country_region_territory": R.NO_ACCESS,
                "context_length_exceeded": R.BAD_REQUEST,
            }
        ),
    ),
    SymbolTable(
        split_path("error.type"),
        MappingProxyType(
            {
                "insufficient_quota": R.NO_QUOTA,
                "request_forbidden": R.NO_ACCESS,
                "authentication_error": R.INVALID_KEY,
            }
        ),
    ),
)

# --- Anthropic: {"type": "error", "error": {"type", "message"}, "request_id"} ------------------

ANTHROPIC_RULES: Final = (
    ErrorRule(
        400,
        "error.message",
        r"credit balance is too low",
        R.NO_QUOTA,
        10,
        "Your credit balance is too low to access the Anthropic API...",
    ),
    ErrorRule(
        400,
        "error.message",
        r"reached your specified API usage limits",
        R.NO_QUOTA,
        10,
        "monthly spend limit of the workspace",
    ),
    ErrorRule(
        400, "error.message", r"organization has been disabled", R.NO_ACCESS, 10, "org disabled"
    ),
    ErrorRule(
        429,
        "error.details.error_code",
        r"^enforced_spend_limit_reached$",
        R.NO_QUOTA,
        10,
        "spend limit reached: does not clear with time",
    ),
    # A wrong path gives not_found_error "Not Found"; a wrong model says "model: <name>".
    ErrorRule(404, "error.message", r"^(?i:not found)$", R.BAD_REQUEST, 10, "unknown endpoint"),
)
ANTHROPIC_SYMBOLS: Final = (
    SymbolTable(
        split_path("error.type"),
        MappingProxyType(
            {
                "authentication_error": R.INVALID_KEY,
                "permission_error": R.NO_ACCESS,
                "not_found_error": R.NO_MODEL,
                "rate_limit_error": R.RATE_LIMITED,
                "overloaded_error": R.OVERLOADED,
                "api_error": R.SERVER_ERROR,
                "billing_error": R.NO_QUOTA,
                "request_too_large": R.BAD_REQUEST,
                "timeout_error": R.TIMEOUT,
                "invalid_request_error": R.BAD_REQUEST,
            }
        ),
    ),
)

# --- Gemini: {"error": {"code", "message", "status", "details": [google.rpc.*]}} --------------

GEMINI_RULES: Final = (
    ErrorRule(
        400, "error.details.*.reason", r"^API_KEY_INVALID$", R.INVALID_KEY, 20, "ErrorInfo reason"
    ),
    ErrorRule(
        400,
        "error.message",
        r"API key not valid|API key expired",
        R.INVALID_KEY,
        10,
        "API key not valid. Please pass a valid API key.",
    ),
    # "User location is not supported for the API use." / free tier not in the country.
    ErrorRule(400, "error.status", r"^FAILED_PRECONDITION$", R.NO_ACCESS, 10, "region"),
    # A per-day quota does not clear for hours: the key has no quota for this model today.
    ErrorRule(
        429,
        "error.details.*.violations.*.quotaId",
        r"PerDay",
        R.NO_QUOTA,
        20,
        "QuotaFailure on a per-day quota",
    ),
    # "limit: 0": the model has no free-tier quota at all for this key.
    ErrorRule(429, "error.details.*.violations.*.quotaValue", r"^0$", R.NO_QUOTA, 20, "zero quota"),
    ErrorRule(429, "error.message", r"limit: 0\b", R.NO_QUOTA, 15, "zero quota"),
)
GEMINI_SYMBOLS: Final = (
    SymbolTable(
        split_path("error.status"),
        MappingProxyType(
            {
                "INVALID_ARGUMENT": R.BAD_REQUEST,
                "OUT_OF_RANGE": R.BAD_REQUEST,
                "FAILED_PRECONDITION": R.NO_ACCESS,
                "UNAUTHENTICATED": R.INVALID_KEY,
                "PERMISSION_DENIED": R.NO_ACCESS,
                "NOT_FOUND": R.NO_MODEL,
                "RESOURCE_EXHAUSTED": R.RATE_LIMITED,
                "INTERNAL": R.SERVER_ERROR,
                "UNKNOWN": R.SERVER_ERROR,
                "UNAVAILABLE": R.OVERLOADED,
                "DEADLINE_EXCEEDED": R.TIMEOUT,
            }
        ),
    ),
)
GEMINI_STATUS_REASONS: Final[Mapping[int, R]] = MappingProxyType(
    {**COMMON_STATUS_REASONS, 503: R.OVERLOADED}  # "The model is overloaded."
)


def builtin_defaults(provider_type: ProviderType) -> BuiltinDefaults:
    """Compile the built-in error tables of `provider_type` (call once per adapter)."""
    match provider_type:
        case ProviderType.OPENAI_LIKE:
            return BuiltinDefaults(
                CompiledRules(OPENAI_RULES), OPENAI_SYMBOLS, COMMON_STATUS_REASONS
            )
        case ProviderType.ANTHROPIC:
            return BuiltinDefaults(
                CompiledRules(ANTHROPIC_RULES),
                ANTHROPIC_SYMBOLS,
                COMMON_STATUS_REASONS,
            )
        case ProviderType.GEMINI:
            return BuiltinDefaults(
                CompiledRules(GEMINI_RULES), GEMINI_SYMBOLS, GEMINI_STATUS_REASONS
            )
        case _:
            assert_never(provider_type)
