"""`session-broker check`, the real binary against real peers: redis-server (one node and a Cluster),
the example FastMCP backend (legacy, stateful), the modern example backend (both eras, and 2026-07-28
only) and an OAuth provider's JWKS on loopback.

Each run prints one line per check (`ok   what: ...` or `FAIL what: ...`) and exits 0 when every
line says ok, 1 otherwise. The versions it reports are the peers' own (redis-server's `INFO`); the
backend session its `initialize` opened is closed (the backend logs the DELETE); no secret is printed.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from conftest import SIGNING_KEY, broker_binary, free_port
from test_identity import ISSUER, IdentityProvider


def check(*args: str) -> tuple[int, str, dict[str, str]]:
    """Runs `session-broker check ARGS` (no BROKER_* variable of the test's environment): its exit
    status, its output, and each line by what it checks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env["NO_COLOR"] = "1"
    done = subprocess.run([broker_binary(), "check", *args], capture_output=True, text=True, timeout=60, env=env)
    output = done.stdout + done.stderr
    lines = {}
    for line in done.stdout.splitlines():
        match = re.match(r"^(ok  |FAIL) ([a-z ]+): ", line)
        assert match, f"not a check line: {line!r}\n{output}"
        lines[match.group(2)] = line
    return done.returncode, output, lines


def redis_version(port: int) -> str:
    info = subprocess.run(["redis-cli", "-p", str(port), "INFO", "server"], capture_output=True, text=True, timeout=10).stdout
    found = re.search(r"^redis_version:(\S+)", info, re.MULTILINE)
    assert found, info
    return found.group(1)


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    yield provider
    provider.close()


def test_all_ok_with_redis_and_the_example_backend(redis_server, backend_factory):
    backend = backend_factory()
    code, output, lines = check("--upstream", backend.url, "--redis-url", redis_server.url, "--signing-key", SIGNING_KEY)
    assert code == 0, output
    assert list(lines) == ["config", "signing key", "store", "upstream", "identity"], output
    assert all(line.startswith("ok   ") for line in lines.values()), output
    assert lines["signing key"] == "ok   signing key: HS256 secret from --signing-key / BROKER_SIGNING_KEY", output
    version = redis_version(redis_server.process.port)
    assert lines["store"] == f"ok   store: redis {version}, standalone, plain", output
    upstream = lines["upstream"]
    assert upstream.startswith(f'ok   upstream: {backend.url}: "example-memory-backend" '), output
    assert "speaks MCP 2025-11-25 (stateful, its session closed)" in upstream, output
    assert upstream.endswith("2026-07-28: not offered (the broker bridges modern clients)"), output
    assert lines["identity"].startswith("ok   identity: bearer-hmac"), output
    assert SIGNING_KEY not in output
    # The backend saw the session end: the check leaves nothing open behind it.
    assert '"DELETE /mcp HTTP/1.1" 200' in backend.process.log_text(), backend.process.log_text()


def test_a_stopped_redis_fails_the_store_line_and_exits_1(redis_server, backend_factory):
    backend = backend_factory()
    redis_server.process.stop()
    code, output, lines = check("--upstream", backend.url, "--redis-url", redis_server.url, "--signing-key", SIGNING_KEY)
    assert code == 1, output
    assert lines["store"].startswith(f"FAIL store: redis at {redis_server.url}: "), output
    assert lines["upstream"].startswith("ok   "), output


def test_a_stopped_backend_fails_the_upstream_line_and_exits_1(backend_factory):
    backend = backend_factory()
    backend.process.stop()
    code, output, lines = check("--upstream", backend.url)
    assert code == 1, output
    assert lines["upstream"].startswith(f"FAIL upstream: {backend.url}: unreachable: "), output
    assert lines["store"].startswith("ok   store: memory"), output


def test_the_eras_of_the_modern_backend(modern_backend_factory):
    both = modern_backend_factory()
    code, output, lines = check("--upstream", both.url)
    assert code == 0, output
    assert re.match(
        rf'^ok   upstream: {re.escape(both.url)}: "example-modern-backend" speaks MCP 2025-\d\d-\d\d \(stateless\); 2026-07-28: offered$',
        lines["upstream"],
    ), output

    modern_only = modern_backend_factory(modern_only=True)
    code, output, lines = check("--upstream", modern_only.url)
    assert code == 0, output
    assert lines["upstream"].startswith(
        f'ok   upstream: {modern_only.url}: "example-modern-backend" speaks MCP 2026-07-28 only (initialize refused: answered HTTP 400'
    ), output


def test_a_redis_cluster_is_named_and_a_plain_url_to_one_of_its_nodes_fails(redis_cluster, backend_factory):
    backend = backend_factory()
    version = redis_version(redis_cluster.nodes[0].port)
    code, output, lines = check("--upstream", backend.url, "--redis-url", redis_cluster.url, "--signing-key", SIGNING_KEY)
    assert code == 0, output
    assert lines["store"] == f"ok   store: redis {version}, cluster (3 primaries), plain", output

    one_node = f"redis://127.0.0.1:{redis_cluster.nodes[0].port}/0"
    code, output, lines = check("--upstream", backend.url, "--redis-url", one_node, "--signing-key", SIGNING_KEY)
    assert code == 1, output
    assert lines["store"].startswith("FAIL store: ") and "redis+cluster://" in lines["store"], output


def test_the_identity_provider_keys_are_fetched(idp: IdentityProvider, backend_factory):
    backend = backend_factory()
    idp.add_key()
    jwt = ("--principal", "jwt", "--jwt-jwks-url", idp.url, "--jwt-issuer", ISSUER)
    code, output, lines = check("--upstream", backend.url, *jwt)
    assert code == 0, output
    assert lines["identity"].startswith(f"ok   identity: jwt: JWKS {idp.url}: 2 keys, 2 for RS256,ES256,EdDSA; issuer `{ISSUER}`"), output

    missing = f"http://127.0.0.1:{free_port()}/jwks.json"
    code, output, lines = check("--upstream", backend.url, "--principal", "jwt", "--jwt-jwks-url", missing, "--jwt-issuer", ISSUER)
    assert code == 1, output
    assert lines["identity"].startswith(f"FAIL identity: jwt: JWKS {missing}: "), output
