"""Reads bench/run's per-cell results and prints one markdown table (docs/performance.md reads it).

    python3 bench/table.py HEADER CELLS

Each cell line is `key=value ...` (`redis0={...}`, `up0={...}` hold spaces or JSON). For every
(workload, target) the table shows medians over the repeats, with the spread as ±half the range in
percent of the median:
- req/s at c=32 in the split layout (the proxy alone on CPU 1) and its ratio to nginx's;
- p50 / p99 at c=1 in the one-core layout, and the p50 added over direct;
- CPU µs per unit of the proxy process (utime + stime from /proc, all threads) at c=32 in the
  one-core layout, and its ratio to nginx's;
- Redis round trips per unit (INFO `total_reads_processed`: one per request a client sent, the
  harness's own INFO calls not counted), Redis's own CPU µs per unit (/proc), upstream requests per
  unit (the fake upstream's counters), all at c=32 one-core; below the table, the commands per unit
  from INFO commandstats (which counts the commands a script runs as well);
- the broker's largest RSS, and errors + bad replies over every cell.
A unit is one tools/call (steady, select) or one turn (turns: initialize + initialized + call).
Standard library only.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict

PAIR = re.compile(r"(\w+)=(\{[^}]*\}|\S+)")


def parse(line: str) -> dict:
    cell: dict = {}
    for key, value in PAIR.findall(line):
        if key in ("redis0", "redis1"):
            cell[key] = {k: float(v) for k, v in (p.split("=") for p in value.strip("{}").split())}
        elif key in ("up0", "up1"):
            cell[key] = json.loads(value)
        else:
            try:
                cell[key] = float(value)
            except ValueError:
                cell[key] = value
    units = max(cell.get("requests", 0.0), 1.0)
    cell["cpu_us"] = cell["cpu_ticks"] * 1e6 / cell["hz"] / units
    r0, r1 = cell.get("redis0", {}), cell.get("redis1", {})
    cell["redis_per_unit"] = {k: (r1.get(k, 0.0) - r0.get(k, 0.0)) / units for k in r1}
    cell["redis_per_unit"].pop("info", None)
    # Requests Redis read: two of them are the first INFO's end of connection and the second INFO.
    cell["round_trips"] = (r1.get("reads", 0.0) - r0.get("reads", 0.0) - 2) / units
    cell["redis_cpu_us"] = cell.get("redis_ticks", 0.0) * 1e6 / cell["hz"] / units
    up0, up1 = cell.get("up0", {}), cell.get("up1", {})
    cell["upstream_per_unit"] = (up1.get("requests", 0) - up0.get("requests", 0)) / units
    return cell


def median_spread(values: list[float]) -> tuple[float, float]:
    """(median, half the range in % of the median)."""
    if not values:
        return float("nan"), float("nan")
    mid = statistics.median(values)
    spread = (max(values) - min(values)) / 2 / mid * 100 if mid else 0.0
    return mid, spread


def fmt_rate(value: float, spread: float) -> str:
    if value != value:  # nan
        return "-"
    return f"{value:,.0f} ±{spread:.0f}%"


def fmt(value: float, digits: int = 0) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"


def main(header_path: str, cells_path: str) -> None:
    with open(header_path) as header:
        print(header.read().strip())
    cells = [parse(line) for line in open(cells_path) if line.strip()]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for cell in cells:
        groups[(cell["workload"], cell["target"], cell["layout"], int(cell["c"]))].append(cell)

    def stat(workload: str, target: str, layout: str, c: int, key) -> tuple[float, float]:
        values = [key(cell) for cell in groups.get((workload, target, layout, c), [])]
        return median_spread(values)

    workloads = list(dict.fromkeys(cell["workload"] for cell in cells))
    targets = list(dict.fromkeys(cell["target"] for cell in cells))
    print()
    print("| workload | target | req/s c=32, proxy on own core | × nginx | p50 / p99 µs c=1, one core "
          "| added p50 µs | CPU µs/unit c=32 | CPU × nginx | Redis round trips/unit | Redis CPU µs/unit "
          "| upstream req/unit | RSS MiB | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    breakdown = []
    for workload in workloads:
        rps = lambda t: stat(workload, t, "split", 32, lambda c: c["rps"])  # noqa: E731
        p50 = lambda t: stat(workload, t, "one", 1, lambda c: c["p50_ms"] * 1000)[0]  # noqa: E731
        cpu = lambda t: stat(workload, t, "one", 32, lambda c: c["cpu_us"])[0]  # noqa: E731
        nginx_rps, nginx_cpu, direct_p50 = rps("nginx")[0], cpu("nginx"), p50("direct")
        for target in targets:
            mine = [c for c in cells if c["workload"] == workload and c["target"] == target]
            if not mine:
                continue
            rate, spread = rps(target)
            p99 = stat(workload, target, "one", 1, lambda c: c["p99_ms"] * 1000)[0]
            cpu_us = cpu(target) if target != "direct" else float("nan")
            trips = stat(workload, target, "one", 32, lambda c: c["round_trips"])[0]
            redis_cpu = stat(workload, target, "one", 32, lambda c: c["redis_cpu_us"])[0]
            if target != "redis":
                trips = redis_cpu = float("nan")
            upstream = stat(workload, target, "one", 32, lambda c: c["upstream_per_unit"])[0]
            rss = max(c["rss_kib"] for c in mine) / 1024 if target in ("memory", "redis") else float("nan")
            errors = sum(int(c["errors"] + c["bad_replies"]) for c in mine)
            print(f"| {workload} | {target} | {fmt_rate(rate, spread)} | {fmt(rate / nginx_rps, 2)} "
                  f"| {fmt(p50(target))} / {fmt(p99)} | {fmt(p50(target) - direct_p50)} | {fmt(cpu_us, 1)} "
                  f"| {fmt(cpu_us / nginx_cpu, 1)} | {fmt(trips, 2)} | {fmt(redis_cpu, 1)} "
                  f"| {fmt(upstream, 2)} | {fmt(rss, 1)} | {errors} |")
            if target == "redis":
                per = defaultdict(list)
                for cell in groups.get((workload, target, "one", 32), []):
                    for name, value in cell["redis_per_unit"].items():
                        if name not in ("total", "reads"):
                            per[name].append(value)
                shown = ", ".join(f"{name} {statistics.median(v):.2f}" for name, v in sorted(per.items())
                                  if statistics.median(v) >= 0.01)
                breakdown.append(f"{workload}: {shown or 'none'}")
    if breakdown:
        print()
        print("Redis commands per unit (INFO commandstats, c=32, one core; the commands scripts run "
              "are counted too): " + "; ".join(breakdown) + ".")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
