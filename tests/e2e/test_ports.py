"""The harness's port draws (issue 17, item 6): no two draws of a run hand out one port, and every
port is below the kernel's ephemeral range, where no outgoing connection can take it."""

from __future__ import annotations

import socket

from ports import SERVER_PORTS, free_cluster_ports, free_ports


def test_draws_never_repeat_a_port_and_stay_out_of_the_ephemeral_range() -> None:
    drawn = [port for _ in range(20) for port in free_ports(3)]
    assert len(set(drawn)) == len(drawn), "a port was handed out twice"
    assert all(port in SERVER_PORTS for port in drawn), drawn
    nodes = free_cluster_ports(6)
    buses = [port + 10_000 for port in nodes]
    assert len(set(nodes + buses + drawn)) == len(nodes) + len(buses) + len(drawn)
    # Each handed-out port is free to bind right after the draw.
    for port in drawn[-3:] + nodes[:1] + buses[:1]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
