#!/usr/bin/env python3
"""Tables of bench-results/fanout-floor.md from run.sh's JSON reports (OUT_DIR/RATE-N-KIND.json)."""
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
runs = {}
for p in sorted(out.glob("*.json")):
    rate, n, kind = p.stem.split("-")
    r = json.loads(p.read_text())
    x, c = r["results"], r["cpu"]
    runs.setdefault((int(rate), kind), []).append({
        "n": int(n),
        "p99_ms": x["latency_us"]["p99"] / 1000,
        "srv": c["server_cpu_ns_per_msg"],
        "srv_us": (c["server_user_s"], c["server_sys_s"]),
        "lg": c["loadgen_cpu_ns_per_msg"],
        "lg_us": (c["loadgen_user_s"], c["loadgen_sys_s"]),
        "deliv": x["messages"],
        "errors": x["errors_total"],
        "complete": f'{x["extra"]["complete_fanouts"]}/{x["extra"]["sent"]}',
        "size": x["extra"]["size"],
    })

print("| rate | kind | round | p99 send → last delivery | server CPU / delivery (user + sys s) | loadgen CPU / delivery (user + sys s) | complete fan-outs | errors |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for (rate, kind), rs in sorted(runs.items()):
    for r in sorted(rs, key=lambda r: r["n"]):
        print(f'| {rate} | {kind} | {r["n"]} | {r["p99_ms"]:.2f} ms | {r["srv"]:,.0f} ns ({r["srv_us"][0]:.2f} + {r["srv_us"][1]:.2f}) '
              f'| {r["lg"]:,.0f} ns ({r["lg_us"][0]:.2f} + {r["lg_us"][1]:.2f}) | {r["complete"]} | {r["errors"]} |')

med = lambda rs, k: statistics.median(r[k] for r in rs)
print()
print("| rate | kind | median p99 | median server CPU / delivery | median loadgen CPU / delivery |")
print("| --- | --- | --- | --- | --- |")
for (rate, kind), rs in sorted(runs.items()):
    print(f'| {rate} | {kind} | {med(rs, "p99_ms"):.2f} ms | {med(rs, "srv"):,.0f} ns | {med(rs, "lg"):,.0f} ns |')
print()
print("| rate | sockchat (after) / raw: server CPU per delivery | p99 | loadgen after / before: CPU per delivery | p99 |")
print("| --- | --- | --- | --- | --- |")
for rate in sorted({k[0] for k in runs}):
    a, b, w = runs.get((rate, "after")), runs.get((rate, "before")), runs.get((rate, "raw"))
    if not (a and b and w):
        continue
    print(f'| {rate} | {med(a, "srv") / med(w, "srv"):.2f}× | {med(a, "p99_ms") / med(w, "p99_ms"):.2f}× '
          f'| {med(a, "lg") / med(b, "lg"):.2f}× | {med(a, "p99_ms") / med(b, "p99_ms"):.2f}× |')
