"""Identity that survives token refresh: OAuth access tokens (JWTs from a real RSA key set served as
a JWKS by a little identity provider in this test) name the principal by issuer and subject, so a
refreshed token keeps the work session; another subject sees nothing; another issuer is refused.
And the header source: an authenticating proxy's header, believed only from trusted peers.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import free_port
from e2e_helpers import (
    BROKER_NONE_SELECTED,
    assert_audit_clean,
    assert_broker_error,
    assert_on_project,
    assert_selected,
    initialize_body,
    reconnecting_reply,
    rpc_headers,
)

pytestmark = pytest.mark.anyio

ISSUER = "https://idp.e2e.test/"
AUDIENCE = "https://mcp.e2e.test/mcp"


class IdentityProvider:
    """RSA signing keys, a JWKS endpoint on loopback, and access tokens like an OAuth server's."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        # Published before the RSA keys (e.g. an EC key under an RSA key's kid).
        self.extra_keys: list[dict] = []
        self.add_key()
        self.port = free_port()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = json.dumps(provider.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def add_key(self) -> str:
        kid = f"key-{len(self.keys) + 1}"
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def jwks(self) -> dict:
        keys = list(self.extra_keys)
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def token(
        self,
        sub: str,
        issuer: str = ISSUER,
        kid: str = "key-1",
        lifetime: int = 3600,
        claims: dict | None = None,
        headers: dict | None = None,
    ) -> str:
        """An access token; `claims` overrides (a value of ... drops the claim), `headers` adds to the JWS header."""
        now = int(time.time())
        base = {"iss": issuer, "sub": sub, "aud": AUDIENCE, "iat": now, "exp": now + lifetime, "jti": str(uuid.uuid4())}
        merged = {k: v for k, v in {**base, **(claims or {})}.items() if v is not ...}
        return jwt.encode(merged, self.keys[kid], algorithm="RS256", headers={"kid": kid, **(headers or {})})

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    yield provider
    provider.close()


def jwt_args(idp: IdentityProvider, *extra: str) -> tuple[str, ...]:
    return (
        "--principal", "jwt",
        "--jwt-jwks-url", idp.url,
        "--jwt-issuer", ISSUER,
        "--jwt-audience", AUDIENCE,
        *extra,
    )  # fmt: skip


async def test_an_oauth_token_refresh_keeps_the_work_session(make_stack, idp: IdentityProvider) -> None:
    stack = make_stack(redis=True, broker_args=jwt_args(idp))
    first = idp.token("alice")
    handle = assert_selected(
        await reconnecting_reply(stack.url, first, "claude-ai", "select_project_for_session", {"name": "atlas"}), "atlas"
    )
    refreshed = idp.token("alice")
    assert refreshed != first
    assert_on_project(await reconnecting_reply(stack.url, refreshed, "claude-ai", "get_last_handover"), "atlas", "after the refresh")
    # The handle minted for the first token works with the refreshed one: same principal.
    reply = await reconnecting_reply(stack.url, idp.token("alice"), "claude-code", "get_last_handover", {"work_session": handle})
    assert_on_project(reply, "atlas", "handle after the refresh")
    # A key the provider rotated in later is fetched on first sight (the broker fetches at most once
    # per 5 s for unknown keys); still alice.
    kid = idp.add_key()
    time.sleep(5.5)
    rotated = await reconnecting_reply(stack.url, idp.token("alice", kid=kid), "claude-ai", "get_last_handover")
    assert_on_project(rotated, "atlas", "with a rotated key")
    # Another subject of the same issuer sees nothing.
    other = await reconnecting_reply(stack.url, idp.token("bob"), "claude-ai", "get_last_handover")
    assert_broker_error(other, BROKER_NONE_SELECTED)
    assert_audit_clean(stack.backend.audit(), allowed={"atlas"})
    assert first not in stack.broker.log_text(), "an access token reached the broker's log"


async def test_refused_tokens_get_401_with_the_resource_metadata(make_stack, idp: IdentityProvider) -> None:
    metadata = "https://mcp.e2e.test/.well-known/oauth-protected-resource"
    stack = make_stack(redis=False, broker_args=jwt_args(idp, "--jwt-resource-metadata", metadata))
    stranger = IdentityProvider()  # its own keys, unknown to the broker
    try:
        cases = {
            "another issuer's key": stranger.token("alice"),
            "our key, another issuer": idp.token("alice", issuer="https://evil.e2e.test/"),
            "expired": idp.token("alice", lifetime=-600),
            "no audience": idp.token("alice", claims={"aud": ...}),
            "a null audience": idp.token("alice", claims={"aud": None}),
            "another audience": idp.token("alice", claims={"aud": "https://other.e2e.test/mcp"}),
            "a critical extension": idp.token("alice", headers={"crit": ["exp"]}),
            "not a JWT": "an-opaque-api-key",
        }
        async with httpx.AsyncClient(timeout=10) as http:
            for what, token in cases.items():
                response = await http.post(stack.url, json=initialize_body("claude-ai"), headers=rpc_headers(token))
                assert response.status_code == 401, f"{what}: {response.status_code} {response.text}"
                challenge = response.headers.get("www-authenticate", "")
                assert f'resource_metadata="{metadata}"' in challenge, f"{what}: {challenge!r}"
                if what != "not a JWT":
                    assert 'error="invalid_token"' in challenge, f"{what}: {challenge!r}"
            missing = await http.post(stack.url, json=initialize_body("claude-ai"), headers=rpc_headers(None))
            assert missing.status_code == 401
            assert f'resource_metadata="{metadata}"' in missing.headers.get("www-authenticate", "")
            good = await http.post(stack.url, json=initialize_body("claude-ai"), headers=rpc_headers(idp.token("alice")))
            assert good.status_code == 200, good.text
    finally:
        stranger.close()
    assert stack.backend.audit() == [], "a refused request reached a tool"


async def test_a_trusted_proxy_header_names_the_caller(make_stack, backend_factory, broker_factory) -> None:
    args = ("--principal", "header", "--principal-header", "x-forwarded-user", "--trusted-proxies", "127.0.0.0/8")
    stack = make_stack(redis=False, broker_args=args)
    alice = {"x-forwarded-user": "alice@example.test"}
    bob = {"x-forwarded-user": "bob@example.test"}
    assert_selected(
        await reconnecting_reply(stack.url, None, "claude-ai", "select_project_for_session", {"name": "zephyr"}, alice),
        "zephyr",
    )
    assert_on_project(await reconnecting_reply(stack.url, None, "claude-ai", "get_last_handover", None, alice), "zephyr")
    assert_broker_error(await reconnecting_reply(stack.url, None, "claude-ai", "get_last_handover", None, bob), BROKER_NONE_SELECTED)
    # The same header from a peer that is not trusted names nobody.
    untrusting = broker_factory(stack.backend, extra_args=("--principal", "header", "--principal-header", "x-forwarded-user", "--trusted-proxies", "10.0.0.0/8"))
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(untrusting.url, json=initialize_body("claude-ai"), headers={**rpc_headers(None), **alice})
        assert response.status_code == 401, response.text
        # Two Authorization headers are refused outright.
        two = [*rpc_headers("k1").items(), ("Authorization", "Bearer k2")]
        response = await http.post(stack.url, json=initialize_body("claude-ai"), headers=two)
        assert response.status_code == 400, response.text


def test_a_header_source_without_trusted_peers_refuses_to_start(backend_factory, processes) -> None:
    import subprocess

    from conftest import broker_binary

    backend = backend_factory()
    result = subprocess.run(
        [broker_binary(), "--listen", f"127.0.0.1:{free_port()}", "--upstream", backend.url, "--admin-listen", "off",
         "--principal", "header", "--principal-header", "x-forwarded-user"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--trusted-proxies" in result.stderr, result.stderr


async def test_two_keys_under_one_kid_and_admin_lookups_by_access_token(make_stack, idp: IdentityProvider) -> None:
    """A key set that publishes an EC key under the RSA key's kid still verifies the RSA-signed tokens
    (the key is chosen by type and algorithm); the admin API finds a work session by an access token the
    way the proxy names its principal (issuer and subject), so a refreshed token finds the same one."""
    twin = ec.generate_private_key(ec.SECP256R1())
    idp.extra_keys.append({**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(twin.public_key())), "kid": "key-1", "alg": "ES256"})
    stack = make_stack(redis=False, broker_args=jwt_args(idp))
    assert_selected(
        await reconnecting_reply(stack.url, idp.token("alice"), "claude-ai", "select_project_for_session", {"name": "atlas"}),
        "atlas",
    )
    admin = stack.broker.admin_url
    async with httpx.AsyncClient(timeout=10) as http:
        async def lookup(credential: str) -> httpx.Response:
            return await http.get(f"{admin}/sessions", headers={"X-Principal-Credential": credential})

        refreshed = await lookup(f"Bearer {idp.token('alice')}")
        assert refreshed.status_code == 200, refreshed.text
        assert [s["project"] for s in refreshed.json()["work_sessions"]] == ["atlas"], refreshed.text
        bare = await lookup(idp.token("alice"))
        assert bare.json()["principal"] == refreshed.json()["principal"], bare.text
        bob = await lookup(idp.token("bob"))
        assert bob.status_code == 200 and bob.json()["work_sessions"] == [], bob.text
        for what, token in {
            "expired": idp.token("alice", lifetime=-600),
            "no audience": idp.token("alice", claims={"aud": ...}),
            "not a JWT": "an-opaque-api-key",
        }.items():
            refused = await lookup(token)
            assert refused.status_code == 400, (what, refused.status_code, refused.text)
