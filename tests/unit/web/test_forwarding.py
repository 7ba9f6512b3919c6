"""Unit tests of what crosses the gateway: credential carriers, hop-by-hop headers, safe paths."""

from __future__ import annotations

import base64

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from llmgateway.core.errors import GatewayAuthError
from llmgateway.core.masking import KeyPattern, Masker, mask_key
from llmgateway.web.forwarding import (
    client_token,
    downstream_headers,
    safe_path,
    strip_key_param,
    upstream_headers,
)


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    """An immutable case-insensitive header multidict, as aiohttp hands them over."""
    return CIMultiDictProxy(CIMultiDict(pairs))


class TestClientToken:
    """Which carrier held the gateway token, and when a request is refused."""

    @pytest.mark.parametrize(
        ("pairs", "query"),
        [
            ((("Authorization", "Bearer tok-1-0123456789abcdef"),), None),
            ((("authorization", "bearer   tok-1-0123456789abcdef  "),), None),
            ((("x-api-key", "tok-1-0123456789abcdef"),), None),
            ((("X-Goog-Api-Key", "tok-1-0123456789abcdef"),), None),
            ((), "tok-1-0123456789abcdef"),
        ],
    )
    def test_each_carrier_yields_the_token(
        self, pairs: tuple[tuple[str, str], ...], query: str | None
    ) -> None:
        """Bearer, x-api-key, x-goog-api-key and the key parameter each carry the token."""
        assert client_token(headers(*pairs), query) == "tok-1-0123456789abcdef"

    def test_the_same_token_in_two_carriers_is_accepted(self) -> None:
        """Two carriers holding the same token are not a conflict."""
        got = client_token(headers(("Authorization", "Bearer tok"), ("x-api-key", "tok")), "tok")
        assert got == "tok"

    @pytest.mark.parametrize(
        ("pairs", "query"),
        [
            ((("Authorization", "Bearer a"), ("x-api-key", "b")), None),
            ((("x-api-key", "a"), ("x-goog-api-key", "b")), None),
            ((("x-goog-api-key", "a"),), "b"),
            ((("Authorization", "Bearer a"),), "b"),
        ],
    )
    def test_two_different_credentials_are_refused(
        self, pairs: tuple[tuple[str, str], ...], query: str | None
    ) -> None:
        """Two carriers holding different tokens raise GatewayAuthError (no guessing)."""
        with pytest.raises(GatewayAuthError, match="two different"):
            client_token(headers(*pairs), query)

    @pytest.mark.parametrize(
        "pairs",
        [(), (("Authorization", "Bearer "),), (("x-api-key", ""),), (("x-api-key", "  "),)],
    )
    def test_no_token_is_refused(self, pairs: tuple[tuple[str, str], ...]) -> None:
        """A request without a (non-empty) token raises GatewayAuthError."""
        with pytest.raises(GatewayAuthError):
            client_token(headers(*pairs), None)

    def test_a_non_bearer_authorization_is_refused(self) -> None:
        """`Authorization: Basic ...` is not a gateway token."""
        with pytest.raises(GatewayAuthError, match="Bearer"):
            client_token(headers(("Authorization", "Basic dXNlcjpwYXNz")), None)


class TestUpstreamHeaders:
    """The client headers that reach the upstream."""

    def test_credentials_hop_by_hop_and_framing_are_dropped(self) -> None:
        """Every credential carrier, hop-by-hop field, Host and Content-Length stay behind."""
        client = headers(
            ("Host", "gateway.local"),
            ("Authorization", "Bearer tok"),
            ("x-api-key", "tok"),
            ("x-goog-api-key", "tok"),
            ("Proxy-Authorization", "Basic abc"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("Proxy-Connection", "keep-alive"),
            ("Content-Length", "12"),
            ("Content-Type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("X-Custom", "a"),
            ("X-Custom", "b"),
        )
        out = upstream_headers(client)
        assert list(out.items()) == [
            ("Content-Type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("X-Custom", "a"),
            ("X-Custom", "b"),
            ("Accept-Encoding", "identity"),
        ]

    def test_accept_encoding_is_identity(self) -> None:
        """The upstream is asked for an unencoded body, whatever the client accepts."""
        out = upstream_headers(headers(("Accept-Encoding", "gzip, br")))
        assert out.getall("Accept-Encoding") == ["identity"]


class TestDownstreamHeaders:
    """The upstream headers that reach the client."""

    def test_hop_by_hop_and_framing_are_dropped_and_request_id_set(self) -> None:
        """Hop-by-hop fields, Content-Length, Date and Server are dropped; x-request-id is ours."""
        upstream = headers(
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "10"),
            ("Date", "Mon, 01 Jan 2026 00:00:00 GMT"),
            ("Server", "cloudflare"),
            ("Content-Type", "text/event-stream"),
            ("x-request-id", "req_upstream"),
            ("openai-processing-ms", "42"),
        )
        out = downstream_headers(upstream, "rid-1")
        assert dict(out) == {
            "Content-Type": "text/event-stream",
            "openai-processing-ms": "42",
            "x-upstream-request-id": "req_upstream",
            "x-request-id": "rid-1",
        }

    def test_lower_case_hop_by_hop_fields_are_dropped_too(self) -> None:
        """Header names are matched whatever their case, both ways (no TE+CL smuggling)."""
        client = headers(
            ("transfer-encoding", "chunked"),
            ("CONNECTION", "keep-alive"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("AUTHORIZATION", "Bearer gw-token"),
            ("content-type", "application/json"),
        )
        assert dict(upstream_headers(client)) == {
            "content-type": "application/json",
            "Accept-Encoding": "identity",
        }
        upstream = headers(("transfer-encoding", "chunked"), ("X-Request-ID", "req_9"))
        assert dict(downstream_headers(upstream, "rid-2")) == {
            "x-upstream-request-id": "req_9",
            "x-request-id": "rid-2",
        }

    def test_fields_named_by_the_upstream_connection_header_are_dropped(self) -> None:
        """A response field listed in the upstream's Connection header is hop-by-hop too."""
        upstream = headers(
            ("Connection", "keep-alive, X-Upstream-Hop"),
            ("Connection", "X-Other-Hop"),
            ("X-Upstream-Hop", "internal"),
            ("X-Other-Hop", "internal"),
            ("X-Visible", "yes"),
        )
        assert dict(downstream_headers(upstream, "rid")) == {
            "X-Visible": "yes",
            "x-request-id": "rid",
        }


class TestSafePath:
    """Client paths that could climb out of `api_base_url` are refused."""

    @pytest.mark.parametrize(
        "path",
        [
            "/v1/chat/completions",
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            "/v1/files/a..b",
            "/v1/models/x.y",
            "/v1/x?next=../../etc",
        ],
    )
    def test_ordinary_paths_are_safe(self, path: str) -> None:
        """Dots inside a segment, and in the query, are fine."""
        assert safe_path(path)

    @pytest.mark.parametrize(
        "path",
        [
            "/../admin",
            "/v1/../../admin",
            "/v1/..",
            "/v1/./chat",
            "/v1/%2e%2e/admin",
            "/v1/%2E%2E/admin",
            "/v1/.%2e/admin",
            "/v1/..%2fadmin",
            "/v1/%252e%252e/admin",
            "/v1/..%5cadmin",
            "v1/chat",
        ],
    )
    def test_dot_segments_raw_or_encoded_are_refused(self, path: str) -> None:
        """`..` and `.` segments, raw, percent-encoded or hidden by an encoded slash, are unsafe."""
        assert not safe_path(path)


class TestStripKeyParam:
    """The `key` query parameter never reaches the upstream."""

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("/v1beta/models/m:generateContent?key=tok", "/v1beta/models/m:generateContent"),
            ("/p?alt=sse&key=tok", "/p?alt=sse"),
            ("/p?key=tok&alt=sse&x=%2F", "/p?alt=sse&x=%2F"),
            ("/p?key=a&key=b", "/p"),
            ("/p?keyring=1&key=tok", "/p?keyring=1"),
            ("/p", "/p"),
        ],
    )
    def test_key_is_removed_and_the_rest_kept_verbatim(self, raw: str, expected: str) -> None:
        """Only `key` parameters go; the others keep their order and encoding."""
        assert strip_key_param(raw) == expected

    @pytest.mark.parametrize("raw", ["/p?k%65y=tok&alt=sse", "/p?%6B%65%79=tok&alt=sse"])
    def test_a_percent_encoded_key_name_is_removed_too(self, raw: str) -> None:
        """`k%65y=` is the `key` parameter once decoded (as aiohttp reads it), so it goes too."""
        assert strip_key_param(raw) == "/p?alt=sse"


class TestDownstreamMasking:
    KEY = "sk-proj-downstream-0123456789abcdef"

    def test_headers_holding_a_key_are_masked(self) -> None:
        """A header echoing the key (raw, escaped or encoded) reaches the client masked."""
        masker = Masker([self.KEY])
        upstream = headers(
            ("x-echo", self.KEY),
            ("x-echo-b64", base64.b64encode(self.KEY.encode()).decode()),
            ("Content-Type", "application/json"),
        )
        out = downstream_headers(
            upstream, "rid-1", masker.mask_text, screen=KeyPattern(self.KEY).appears_in
        )
        assert out["x-echo"] == mask_key(self.KEY)
        assert self.KEY not in str(out) and base64.b64encode(self.KEY.encode()).decode() not in str(
            out
        )
        assert out["Content-Type"] == "application/json" and out["x-request-id"] == "rid-1"

    def test_clean_headers_are_copied_as_they_are(self) -> None:
        """Without the key, names and values are untouched (and never masked one by one)."""
        calls: list[str] = []

        def mask(text: str) -> str:
            calls.append(text)
            return text

        upstream = headers(("x-request-id", "req_abc"), ("Retry-After", "7"))
        out = downstream_headers(upstream, "rid-2", mask, screen=KeyPattern(self.KEY).appears_in)
        assert list(out.items()) == [
            ("x-upstream-request-id", "req_abc"),
            ("Retry-After", "7"),
            ("x-request-id", "rid-2"),
        ]
        assert calls == []
