"""The exceptions llmgateway raises, as one tree.

    GatewayError                  base of everything raised on purpose
    ├── ConfigError               the configuration cannot be loaded or is invalid
    │   └── KeyEncryptionMismatch the store's keys are not encrypted as database.encryption_key says
    ├── ProviderNotAdded          `config create` refuses: the name exists, or no safe place
    ├── StoreError                the database failed or holds an unexpected schema
    │   └── SchemaTooNew          the database was migrated by a newer llmgateway
    ├── ClientRequestError        the client's request is refused before going upstream
    │   ├── GatewayAuthError      missing, unknown or conflicting gateway token (401)
    │   │   └── NoToken           no token at all (not counted as a failed attempt)
    │   ├── TooManyAuthFailures   this address failed too often; carries retry_after (429)
    │   ├── MethodNotAllowed      a method the gateway does not proxy (405)
    │   └── BodyTooLarge          request body over `server.max_body_mb` (413)
    ├── NoUsableKey               no key of the pool can serve the model now (503)
    ├── KeysCoolingDown           every usable key is cooling down (429, carries retry_after)
    ├── UpstreamUnavailable       upstream unreachable or failing after all retries (502)
    ├── UpstreamTimeout           the upstream did not answer in time (504)
    └── GatewayFailure            a bug or an unforeseen state of the gateway itself (500)

Messages carry masked keys only, and name a class of failure, never an
upstream URL or bytes the upstream sent.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every exception llmgateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration file cannot be read, resolved or validated.

    `problems` lists every problem found, one human-readable line each.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = problems if problems is not None else [message]


class KeyEncryptionMismatch(ConfigError):
    """The store's keys are encrypted with another key, or not as `database.encryption_key` says.

    Its message names what to run (`llmgateway keys encrypt` ...); commands exit 2 on it.
    """


class ProviderNotAdded(GatewayError):
    """`config create` leaves a valid file alone: the instance exists, or no safe place to add it."""


class StoreError(GatewayError):
    """The store could not complete an operation (connection, SQL or schema error)."""


class SchemaTooNew(StoreError):
    """The database holds migrations this version of llmgateway does not know."""


class ClientRequestError(GatewayError):
    """The client's request is refused before anything is sent upstream."""

    status: int = 400


class GatewayAuthError(ClientRequestError):
    """The gateway token is missing, unknown, or two different tokens were sent."""

    status = 401


class NoToken(GatewayAuthError):
    """The request carried no gateway token at all (a misconfigured client, not a guess)."""


class TooManyAuthFailures(ClientRequestError):
    """This client address sent too many wrong tokens; refused until `retry_after` passes."""

    status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MethodNotAllowed(ClientRequestError):
    """The request's method is not one the gateway proxies; nothing is sent upstream."""

    status = 405


class BodyTooLarge(ClientRequestError):
    """The request body is larger than `server.max_body_mb`."""

    status = 413


class NoUsableKey(GatewayError):
    """No key of the instance can serve the model: every one is condemned or tried."""

    status = 503


class KeysCoolingDown(GatewayError):
    """Every usable key is cooling down after a rate limit; `retry_after` is the soonest return."""

    status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamUnavailable(GatewayError):
    """The upstream could not be reached or kept failing until the retries ran out."""

    status = 502


class UpstreamTimeout(GatewayError):
    """The upstream did not answer within the configured timeouts."""

    status = 504


class GatewayFailure(GatewayError):
    """The gateway itself failed on a request (its outermost guard turns this into a 500)."""

    status = 500
