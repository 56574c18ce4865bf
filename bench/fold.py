"""Folds `perf script` output into stacks and says where the samples went (bench/profile).

    perf script -i perf.data | python3 bench/fold.py folded.txt > summary.txt

Writes folded.txt (`root;...;leaf count` per distinct stack: the input of flamegraph tools) and
prints two views of the samples:
- self time by the crate (or kernel / libc) of the leaf frame: where the CPU was when sampled;
- inclusive shares of a few activities (a sample counts for each activity one of its frames
  belongs to, so these overlap and do not add up to 100%);
- the time in system calls by who made them (the redis client, the upstream client, the client
  side, tokio's own epoll).
Standard library only.
"""

from __future__ import annotations

import re
import sys
from collections import Counter

HASH = re.compile(r"::h[0-9a-f]{16}$")
OFFSET = re.compile(r"\+0x[0-9a-f]+$")

# (label, substrings of a frame): a sample counts for the label when any frame holds one of them.
# Everything runs under tokio's scheduler, so it is not an activity here (its own frames show in the
# self-time view); frames of tracing's `Instrumented` wrapper are ignored for the same reason.
ACTIVITIES = [
    ("syscalls (all)", ["entry_SYSCALL_64"]),
    ("  send: writev/write/sendto (on loopback: the peer's TCP receive and wake-up too)",
     ["do_writev", "__x64_sys_writev", "__x64_sys_write", "ksys_write", "__x64_sys_sendto", "__x64_sys_sendmsg"]),
    ("  receive: recvfrom/read", ["__x64_sys_recvfrom", "__x64_sys_read", "ksys_read", "__x64_sys_recvmsg"]),
    ("  epoll_wait", ["__x64_sys_epoll_wait", "do_epoll_wait"]),
    ("client connections' tasks (hyper server; the request handler runs inside)",
     ["hyper::proto::h1::dispatch::Server", "hyper::server"]),
    ("upstream: hyper client and its connection tasks, proxy::upstream",
     ["hyper::proto::h1::dispatch::Client", "hyper_util::client", "proxy::upstream"]),
    ("store (broker::store)", ["broker::store"]),
    ("redis client (redis::, deadpool; its connection tasks)", ["redis::", "deadpool"]),
    ("JSON (serde_json)", ["serde_json::"]),
    ("tokens (jsonwebtoken, broker::tokens)", ["jsonwebtoken::", "broker::tokens"]),
    ("  signatures (HMAC/SHA-2, Ed25519)", ["hmac::", "sha2::", "ed25519", "curve25519"]),
    ("decide/resolve (broker::decide, broker::resolve)", ["broker::decide", "broker::resolve"]),
    ("tracing and metrics", ["tracing::", "tracing_core::", "tracing_subscriber::", "prometheus_client::"]),
    ("allocation (malloc/free)", ["malloc", "cfree", "__libc_free", "realloc", "_int_free"]),
]


# Who made a system call: the first of these named by a frame above the kernel entry.
ISSUERS = [
    ("redis client", ["redis::", "deadpool"]),
    ("upstream client (hyper client)", ["hyper::proto::h1::dispatch::Client", "hyper_util::client"]),
    ("client side (hyper server)", ["hyper::proto::h1::dispatch::Server", "hyper::server"]),
    ("tokio (epoll, wake-ups)", ["tokio::"]),
]


def issuer(names: list[str]) -> str | None:
    """For a sample in a system call: who made it (names run leaf first)."""
    entry = next((i for i, name in enumerate(names) if name.startswith("entry_SYSCALL_64")), None)
    if entry is None:
        return None
    above = names[entry + 1:]
    for label, needles in ISSUERS:
        if any(needle in name for name in above for needle in needles):
            return label
    return "other"


def frame_name(line: str) -> tuple[str, str]:
    """(symbol, dso) of one stack line: `\t addr symbol+0x.. (dso)`."""
    line = line.strip()
    dso = ""
    if line.endswith(")") and " (" in line:
        line, dso = line.rsplit(" (", 1)
        dso = dso[:-1]
    parts = line.split(" ", 1)
    symbol = parts[1] if len(parts) > 1 else "[unknown]"
    symbol = HASH.sub("", OFFSET.sub("", symbol.strip()))
    return symbol, dso


def area(symbol: str, dso: str) -> str:
    """The crate a leaf frame belongs to, or kernel / a shared library."""
    if "kernel" in dso or dso.startswith("[") and dso != "[unknown]":
        return "kernel"
    if ".so" in dso:
        return dso.rsplit("/", 1)[-1].split(".so")[0]
    name = symbol.lstrip("<").lstrip("&").replace("dyn ", "")
    crate = name.split("::", 1)[0] if "::" in name else name
    return crate or "[unknown]"


def main(folded_path: str) -> None:
    stacks: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    activities: Counter[str] = Counter()
    issuers: Counter[str] = Counter()
    total = 0
    frames: list[tuple[str, str]] = []

    def flush() -> None:
        nonlocal total, frames
        if frames:
            total += 1
            stacks[";".join(symbol for symbol, _ in reversed(frames))] += 1
            leaves[area(*frames[0])] += 1
            names = [symbol for symbol, _ in frames]
            # `Instrumented<F>` (a tracing span around a future) wraps whole requests: not tracing work.
            names = [name for name in names if "Instrumented" not in name]
            for label, needles in ACTIVITIES:
                if any(needle in name for name in names for needle in needles):
                    activities[label] += 1
            who = issuer(names)
            if who:
                issuers[who] += 1
        frames = []

    for line in sys.stdin:
        if not line.strip():
            flush()
        elif line[0] in " \t":
            frames.append(frame_name(line))
        else:
            flush()
    flush()
    with open(folded_path, "w") as out:
        for stack, count in stacks.most_common():
            out.write(f"{stack} {count}\n")
    if not total:
        print("no samples")
        return
    print(f"{total} samples")
    print()
    print("self time by the leaf frame's crate:")
    for name, count in leaves.most_common(14):
        print(f"  {100 * count / total:5.1f}%  {name}")
    print()
    print("inclusive share of activities (overlapping):")
    for label, _ in ACTIVITIES:
        print(f"  {100 * activities[label] / total:5.1f}%  {label}")
    print()
    print("time in system calls, by who made them:")
    for label, count in issuers.most_common():
        print(f"  {100 * count / total:5.1f}%  {label}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
