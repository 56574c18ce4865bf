"""Reads `LABEL TARGET BENCH k=v ...` lines from bench/run and prints a markdown table with ratios
against the direct run of the same backend, measured in the same run."""
import sys

rows = []
for line in sys.stdin:
    backend, target, _, *pairs = line.split()
    values = {k: float(v) for k, v in (p.split("=") for p in pairs)}
    rows.append((backend, target, values))

direct = {b: v for b, t, v in rows if t == "direct"}
print("| backend | path | req/s | vs direct | p50 ms | p99 ms | errors | bad replies |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for backend, target, v in rows:
    ratio = v["rps"] / direct[backend]["rps"] if direct.get(backend, {}).get("rps") else float("nan")
    print(f"| {backend} | {target} | {v['rps']:.0f} | {ratio:.2f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} "
          f"| {int(v['errors'])} | {int(v['bad_replies'])} |")
