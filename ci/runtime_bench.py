#!/usr/bin/env python3
"""Raw echo servers side by side (issue 10, point 5): loadgen raw-server on each engine
against loadgen raw-echo, server pinned to one CPU and loadgen to another, cases
interleaved, medians of the repetitions. Run inside /work/tools/quiet-run, after
`cargo build --release -p loadgen`.

  ci/runtime_bench.py echo --transport unix --reps 3 --out DIR
  ci/runtime_bench.py idle --conns 2000 --out DIR

`echo` writes DIR/echo-TRANSPORT.json (every run) and prints a Markdown table;
`idle` measures RSS growth per idle connection (each connection echoes one byte first).
"""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = ROOT / "target" / "release" / "loadgen"

# (label, engine, ring flags)
CONFIGS = [
    ("monoio (today's raw-server)", "monoio", "plain"),
    ("compio, SINGLE_ISSUER+DEFER_TASKRUN", "compio", "defer"),
    ("monoio + own ring, DEFER_TASKRUN", "ring", "defer"),
    ("monoio + own ring, plain", "ring", "plain"),
]
CASES = [("depth 16, 100 sessions", 16, 100), ("depth 1, 50 sessions", 1, 50)]
SIZE = 240  # sockchat's frame length for 64 B of content


def start_server(engine, ring, transport, cpu, tmp):
    if transport == "tcp":
        listen = ["--tcp", "127.0.0.1:0"]
    else:
        listen = ["--unix", str(Path(tmp) / f"raw-{engine}.sock")]
    argv = ["taskset", "-c", str(cpu), str(LOADGEN), "raw-server", *listen, "--threads", "1",
            "--cpus", str(cpu), "--engine", engine, "--ring", ring]
    p = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    m = re.search(r"listening on (tcp|unix):(\S+)", line)
    if not m:
        p.kill()
        raise RuntimeError(f"raw-server did not start: {line!r}")
    return p, [f"--{m.group(1)}", m.group(2)]


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def echo(a):
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.reps):
            for case, depth, sessions in CASES:
                for label, engine, ring in CONFIGS:
                    p, target = start_server(engine, ring, a.transport, a.server_cpu, tmp)
                    js = Path(tmp) / "r.json"
                    cmd = ["taskset", "-c", str(a.loadgen_cpu), str(LOADGEN), "raw-echo",
                           *target, "--sessions", str(sessions), "--depth", str(depth),
                           "--size", str(SIZE), "--threads", "1", "--cpus",
                           str(a.loadgen_cpu), "--warmup", str(a.warmup), "--duration",
                           str(a.duration), "--quiet", "--server-pid", str(p.pid),
                           "--json", str(js)]
                    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       timeout=a.warmup + a.duration + 60)
                    stop(p)
                    rep_js = json.load(open(js))
                    res, cpu = rep_js["results"], rep_js["cpu"]
                    run = {"rep": rep, "case": case, "config": label, "engine": engine,
                           "ring": ring, "ok": res["ok"] and r.returncode == 0,
                           "msgs_per_s": res["messages_per_sec"],
                           "errors": res["errors_total"],
                           "server_ns_per_msg": cpu.get("server_cpu_ns_per_msg"),
                           "p99_us": res["latency_us"]["p99"]}
                    runs.append(run)
                    print(f"  {rep} {case:24} {label:38} {run['msgs_per_s']:>10.0f} msg/s "
                          f"{run['server_ns_per_msg'] or 0:>7.0f} ns/msg ok={run['ok']}",
                          file=sys.stderr)
    (out / f"echo-{a.transport}.json").write_text(json.dumps(
        {"machine": machine(), "transport": a.transport, "size": SIZE, "runs": runs},
        indent=1))
    print(f"\n{a.transport}, {SIZE} B payloads, medians of {a.reps} (server CPU "
          f"{a.server_cpu}, loadgen CPU {a.loadgen_cpu}):\n")
    print("| case | engine | msg/s | server CPU/msg | p99 | vs monoio msg/s | vs monoio CPU |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for case, _, _ in CASES:
        base = None
        for label, _, _ in CONFIGS:
            rs = [r for r in runs if r["case"] == case and r["config"] == label]
            t = statistics.median(r["msgs_per_s"] for r in rs)
            c = statistics.median(r["server_ns_per_msg"] or 0 for r in rs)
            l = statistics.median(r["p99_us"] for r in rs)
            if base is None:
                base = (t, c)
            print(f"| {case} | {label} | {t/1000:,.0f} k | {c/1000:.2f} µs | {l:.0f} µs | "
                  f"{t/base[0]:.2f}× | {c/base[1]:.2f}× |")


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def idle(a):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, engine, ring in CONFIGS:
            p, target = start_server(engine, ring, "unix", a.server_cpu, tmp)
            path = target[1]
            conns = []
            # Warm the server with the first connections' machinery before the baseline.
            w = socket.socket(socket.AF_UNIX)
            w.connect(path)
            w.sendall(b"x")
            w.recv(1)
            time.sleep(0.3)
            before = rss(p.pid)
            for _ in range(a.conns):
                s = socket.socket(socket.AF_UNIX)
                s.connect(path)
                s.sendall(b"x")
                conns.append(s)
            for s in conns:
                s.settimeout(5)
                assert s.recv(1) == b"x"
            time.sleep(0.5)
            after = rss(p.pid)
            for s in conns:
                s.close()
            w.close()
            stop(p)
            rows.append((label, before, after, (after - before) / a.conns))
    print(f"\nIdle connections (Unix, each echoed one byte, {a.conns} connections):\n")
    print("| engine | RSS before | RSS after | per connection |")
    print("| --- | --- | --- | --- |")
    for label, b, af, per in rows:
        print(f"| {label} | {b/1024:,.0f} KiB | {af/1024:,.0f} KiB | {per:,.0f} B |")


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    return {"cpu": cpu, "nproc": os.cpu_count(), "kernel": os.uname().release}


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo")
    e.add_argument("--transport", choices=["unix", "tcp"], required=True)
    e.add_argument("--reps", type=int, default=3)
    e.add_argument("--warmup", type=float, default=0.5)
    e.add_argument("--duration", type=float, default=3.0)
    i = sub.add_parser("idle")
    i.add_argument("--conns", type=int, default=2000)
    for p in (e, i):
        p.add_argument("--out", default=str(ROOT / "bench-results" / "runtime"))
        p.add_argument("--server-cpu", type=int, default=0)
        p.add_argument("--loadgen-cpu", type=int, default=1)
    a = ap.parse_args()
    echo(a) if a.cmd == "echo" else idle(a)


if __name__ == "__main__":
    main()
