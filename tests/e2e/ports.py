"""Ports for the processes the tests start (issue 17, item 6: ports drawn one at a time collided).

Every draw binds all the ports it hands out at once before releasing them, never hands out a port
handed out before in this run (so two fixtures drawing one after the other cannot collide), and takes
them from below the kernel's ephemeral range (so no outgoing connection can take one as its source
port between the draw and the process's bind, or while a process restarts on it).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path


def _ephemeral_low() -> int:
    """The lowest port the kernel picks for an outgoing connection's source port."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


# Ports handed to processes come from below the kernel's ephemeral range, so no outgoing connection
# (a client, the broker's upstream pool, a Redis client) can take one as its source port between the
# draw and the process's bind, or while the process restarts on it.
# (On a machine whose ephemeral range starts lower, the span is kept and only that guarantee is lost.)
SERVER_PORTS = range(20_000, max(min(_ephemeral_low(), 32_768), 22_000))
# A Redis Cluster node's port P, whose bus port P + 10000 falls in SERVER_PORTS' span.
CLUSTER_PORTS = range(10_000, 20_000)
# Every port handed out in this run: none is handed out twice, so two draws (in one test or in
# fixtures that draw one after the other) never collide.
_handed_out: set[int] = set()


def _draw(count: int, pool: range, offsets: tuple[int, ...] = (0,)) -> list[int]:
    """`count` ports P of `pool` with every P + offset bindable on loopback, all held at once while
    drawing, none handed out before; each P + offset is then recorded as handed out."""
    candidates = [p for p in pool if all(p + o not in _handed_out for o in offsets)]
    if len(candidates) < 2 * count:
        # A long run used up the pool: ports of finished tests are free again.
        _handed_out.clear()
        candidates = list(pool)
    random.shuffle(candidates)
    held: list[socket.socket] = []
    ports: list[int] = []
    taken: set[int] = set()
    try:
        for port in candidates:
            if len(ports) == count:
                break
            wanted = [port + o for o in offsets]
            if taken.intersection(wanted):
                continue
            socks = []
            try:
                for number in wanted:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    socks.append(sock)
                    sock.bind(("127.0.0.1", number))
            except OSError:
                for sock in socks:
                    sock.close()
                continue
            held.extend(socks)
            ports.append(port)
            taken.update(wanted)
    finally:
        for sock in held:
            sock.close()
    if len(ports) < count:
        raise RuntimeError(f"only {len(ports)} of {count} free loopback ports in {pool.start}-{pool.stop - 1}")
    _handed_out.update(taken)
    return ports


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports on 127.0.0.1 for servers: all bound at once before any is
    released, none handed out before in this run, and from below the ephemeral range. Draw every port
    a test (or fixture) needs in one call."""
    return _draw(count, SERVER_PORTS)


def free_port() -> int:
    """One free port, as free_ports(1)."""
    return free_ports(1)[0]


def free_cluster_ports(count: int) -> list[int]:
    """`count` ports P for Redis Cluster nodes, each with its bus port P + 10000 free too, drawn at once."""
    return _draw(count, CLUSTER_PORTS, offsets=(0, 10_000))
