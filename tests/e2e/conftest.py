"""Process fixtures for the end-to-end tests: a real redis-server, the example FastMCP backend and the
session-broker binary (``$BROKER_BIN``), each a direct child process on a free loopback port.

Readiness is detected by polling the TCP port. Every process is killed at teardown. Output goes to
log files under the test's tmp dir; when a test fails, the logs are attached to its report (shown
by pytest as ``log <name>`` sections), and a process that fails to start fails the test with its log.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from ports import free_cluster_ports, free_port, free_ports  # noqa: F401  (tests import them from here)

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKEND_SCRIPT = REPO_ROOT / "examples" / "backend" / "server.py"
MODERN_BACKEND_SCRIPT = REPO_ROOT / "examples" / "backend" / "modern_server.py"
SIGNING_KEY = "e2e-test-signing-key-0123456789abcdef-not-a-secret"
START_TIMEOUT = 30.0
LOG_TAIL = 12_000  # characters of each log attached to a failure report


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class ManagedProcess:
    """One child process with a fixed port and argv; can be stopped and restarted identically."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        assert self.proc is None, f"{self.name} already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                cwd=REPO_ROOT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open(self.port):
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                pytest.fail(f"{self.name} exited with status {code} before listening\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{self.name} not listening on 127.0.0.1:{self.port} after {START_TIMEOUT}s\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        with self.log_path.open("ab") as log:
            log.write(f"===== stopped (status {proc.returncode})\n".encode())
        deadline = time.monotonic() + 5
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> None:
        """Stop, then start again with the same argv on the same port."""
        self.stop()
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self) -> str:
        text = self.log_text()
        return f"--- {self.name} log ({self.log_path}) ---\n{text[-LOG_TAIL:]}"


class ProcessRegistry:
    """Every process a test started, so teardown can kill them and failures can show their logs."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[ManagedProcess] = []

    def spawn(self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None) -> ManagedProcess:
        index = sum(1 for p in self.processes if p.name.split("#")[0] == name)
        label = f"{name}#{index}" if index else name
        proc = ManagedProcess(label, argv, port, self.log_dir / f"{label.replace('#', '-')}.log", env or {})
        self.processes.append(proc)
        proc.start()
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessRegistry]:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    registry = ProcessRegistry(log_dir)
    request.node.e2e_processes = registry
    try:
        yield registry
    finally:
        registry.stop_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # noqa: ARG001
    report = yield
    registry: ProcessRegistry | None = getattr(item, "e2e_processes", None)
    if registry is not None and report.failed and report.when in ("setup", "call"):
        for proc in registry.processes:
            text = proc.log_text()
            report.sections.append((f"log {proc.name} ({proc.log_path})", text[-LOG_TAIL:]))
    return report


# ----------------------------------------------------------------------------------------- redis


@dataclass
class Redis:
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.process.port}/0"


@pytest.fixture
def redis_server(processes: ProcessRegistry, tmp_path: Path) -> Redis:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (Debian: apt-get install -y redis-server); scripts/test installs it when run as root")
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(data_dir)]
    return Redis(processes.spawn("redis", argv, port))


@dataclass
class RedisCluster:
    """Three masters and three replicas, real redis-servers, joined by `redis-cli --cluster create`."""

    nodes: list[ManagedProcess]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def cli(self, port: int, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10).stdout

    def roles(self) -> dict[int, str]:
        """port -> 'master' or 'slave', as each node sees itself."""
        roles = {}
        for node in self.nodes:
            for line in self.cli(node.port, "CLUSTER", "NODES").splitlines():
                if "myself" in line:
                    roles[node.port] = "master" if "master" in line.split()[2] else "slave"
        return roles

    def wait_ok(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in self.cli(n.port, "CLUSTER", "INFO") for n in self.nodes):
                return
            time.sleep(0.1)
        pytest.fail("the Redis Cluster is not ok after %ss" % timeout)

    def failover(self, replica_port: int, timeout: float = 15.0) -> float:
        """`CLUSTER FAILOVER` on a replica: it takes over its master's slots (the master becomes its
        replica). Returns how long until the replica reported itself master."""
        started = time.monotonic()
        out = self.cli(replica_port, "CLUSTER", "FAILOVER").strip()
        assert out == "OK", f"CLUSTER FAILOVER on {replica_port}: {out!r}"
        while time.monotonic() - started < timeout:
            if self.roles().get(replica_port) == "master":
                self.wait_ok()
                return time.monotonic() - started
            time.sleep(0.05)
        pytest.fail(f"replica {replica_port} did not become master within {timeout}s")


@pytest.fixture
def redis_cluster(processes: ProcessRegistry, tmp_path: Path) -> RedisCluster:
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli are not installed (Debian: apt-get install -y redis-server)")
    nodes = []
    for port in free_cluster_ports(6):
        data_dir = tmp_path / f"redis-cluster-{port}"
        data_dir.mkdir()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                "--dir", str(data_dir)]
        nodes.append(processes.spawn("redis-cluster", argv, port))
    created = subprocess.run(
        ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes], "--cluster-replicas", "1", "--cluster-yes"],
        capture_output=True, text=True, timeout=60,
    )
    assert created.returncode == 0, f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}"
    cluster = RedisCluster(nodes)
    cluster.wait_ok()
    return cluster


# --------------------------------------------------------------------------------------- backend


@dataclass
class Backend:
    process: ManagedProcess
    json_response: bool

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.process.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def audit(self) -> list[dict]:
        """The backend's tool-call audit log (see examples/backend/server.py)."""
        response = httpx.get(f"{self.base}/audit", timeout=10)
        response.raise_for_status()
        return response.json()

    def clear_audit(self) -> None:
        httpx.delete(f"{self.base}/audit", timeout=10).raise_for_status()

    def restart(self) -> None:
        self.process.restart()


@pytest.fixture
def backend_factory(processes: ProcessRegistry):
    """backend_factory(json_response=False, extra_args=()) -> Backend, on a fresh port; Backend.restart() keeps it."""

    def make(json_response: bool = False, extra_args: tuple[str, ...] = ()) -> Backend:
        if not BACKEND_SCRIPT.is_file():
            pytest.fail(f"example backend missing: {BACKEND_SCRIPT}")
        port = free_port()
        argv = [sys.executable, str(BACKEND_SCRIPT), "--host", "127.0.0.1", "--port", str(port)]
        if json_response:
            argv.append("--json-response")
        argv += list(extra_args)
        proc = processes.spawn("backend", argv, port, env={"PYTHONUNBUFFERED": "1"})
        return Backend(proc, json_response)

    return make


def modern_python() -> str:
    """The interpreter of .venv-modern (the Python SDK 2.x line), for the modern backend and client."""
    path = os.environ.get("MODERN_PYTHON") or str(REPO_ROOT / ".venv-modern" / "bin" / "python")
    if not Path(path).is_file():
        pytest.fail(f"{path} is missing: scripts/test creates .venv-modern from examples/backend/requirements-modern.txt")
    return path


@pytest.fixture
def modern_backend_factory(processes: ProcessRegistry, tmp_path: Path):
    """modern_backend_factory(json_response=False) -> Backend: examples/backend/modern_server.py (SDK 2.x,
    stateless), verifying the broker's assertions with the e2e signing key."""

    def make(json_response: bool = False, modern_only: bool = False) -> Backend:
        key_file = tmp_path / "modern-backend-assertion.key"
        key_file.write_text(SIGNING_KEY)
        port = free_port()
        argv = [modern_python(), str(MODERN_BACKEND_SCRIPT), "--port", str(port), "--assertion-key-file", str(key_file)]
        if json_response:
            argv.append("--json-response")
        if modern_only:
            argv.append("--modern-only")
        proc = processes.spawn("modern-backend", argv, port, env={"PYTHONUNBUFFERED": "1"})
        return Backend(proc, json_response)

    return make


# ---------------------------------------------------------------------------------------- broker


@dataclass
class Broker:
    process: ManagedProcess
    admin_port: int | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.process.port}"

    @property
    def admin_url(self) -> str:
        """The broker's admin API (its own loopback port: brokers of one test never share one)."""
        assert self.admin_port is not None, "this broker was started with its own --admin-listen"
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def restart(self) -> None:
        self.process.restart()

    def log_text(self) -> str:
        return self.process.log_text()


def broker_binary() -> str:
    path = os.environ.get("BROKER_BIN")
    if not path:
        pytest.fail("BROKER_BIN is not set: point it at the session-broker binary (scripts/test sets it to target/debug/session-broker)")
    if not Path(path).is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"BROKER_BIN={path} is not an executable file: run 'cargo build --bin session-broker' first")
    return path


@pytest.fixture
def broker_factory(processes: ProcessRegistry):
    """broker_factory(backend, redis=None, extra_args=(), env=None) -> Broker; Broker.restart() keeps ports and args.
    `redis` is a Redis or a RedisCluster.

    Each broker listens for its admin API on its own free loopback port (Broker.admin_url); `env` adds to
    (or overrides) the broker's environment."""

    def make(
        backend: Backend, redis: Redis | RedisCluster | None = None, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> Broker:
        binary = broker_binary()
        port, spare_port = free_ports(2)
        argv = [binary, "--listen", f"127.0.0.1:{port}", "--upstream", backend.url]
        if redis is not None:
            argv += ["--redis-url", redis.url]
        # Every broker gets its own admin port (the default 127.0.0.1:9091 would clash between
        # replicas); extra_args may still set --admin-listen itself.
        admin_port = None
        if not any(arg == "--admin-listen" or arg.startswith("--admin-listen=") for arg in extra_args):
            admin_port = spare_port
            argv += ["--admin-listen", f"127.0.0.1:{admin_port}"]
        argv += list(extra_args)
        base = {"BROKER_SIGNING_KEY": SIGNING_KEY, "RUST_LOG": os.environ.get("E2E_RUST_LOG", "info"), "NO_COLOR": "1"}
        return Broker(processes.spawn("broker", argv, port, env={**base, **(env or {})}), admin_port)

    return make


@dataclass
class Stack:
    backend: Backend
    broker: Broker
    redis: Redis | RedisCluster | None

    @property
    def url(self) -> str:
        return self.broker.url


@pytest.fixture
def make_stack(request: pytest.FixtureRequest, backend_factory, broker_factory):
    """make_stack(json_response=False, redis=True) -> Stack: backend + broker (+ a real redis)."""

    def make(
        json_response: bool = False,
        redis: bool = True,
        broker_args: tuple[str, ...] = (),
        backend_args: tuple[str, ...] = (),
    ) -> Stack:
        redis_proc = request.getfixturevalue("redis_server") if redis else None
        backend = backend_factory(json_response=json_response, extra_args=backend_args)
        broker = broker_factory(backend, redis=redis_proc, extra_args=broker_args)
        return Stack(backend, broker, redis_proc)

    return make
