#!/usr/bin/env python3
"""Load benchmark suite for sockchat-server (driven by ci/bench.sh; stdlib only).

Every case starts its own sockchat-server (`--cores 1`, pinned to --server-cpu) and runs
loadgen (`--threads 1`, pinned to --loadgen-cpu); each case's baseline (loadgen's raw
monoio echo server, single-core HMAC-SHA256, ...) is measured in the same run, interleaved
run by run with the case, so the ratios compare figures taken minutes apart on the same
machine under the same load. Reports: medians, min-max ranges, the ratio of the medians,
and each target's standing.

Modes:
  full (default)  every case, --runs runs each; writes bench-results/<date>-<commit>.json,
                  charts, and regenerates bench-results/README.md
  --quick         the CI subset (echo 64 B depth 16 TCP+Unix, churn TCP+Unix, a small
                  heartbeat), one short run each; compares the ratios with
                  bench-results/baseline.json through `loadgen compare` and exits 1 on a
                  drop beyond --max-regression percent
  --quick --update-baseline
                  the same subset; writes bench-results/baseline.json instead of comparing
"""

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench-results"
BASELINE = RESULTS / "baseline.json"
SCHEMA = "sockchat-bench/1"


# --------------------------------------------------------------------------- processes

class Server:
    """A server process we started: waits for its readiness line, stops by PID only."""

    def __init__(self, argv, cpu, ready_re, stream, log_path):
        self.log = open(log_path, "ab")
        cmd = ["taskset", "-c", str(cpu)] + argv
        out = subprocess.PIPE
        self.proc = subprocess.Popen(
            cmd,
            stdout=out if stream == "stdout" else subprocess.DEVNULL,
            stderr=out if stream == "stderr" else self.log,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.lines = []
        pipe = self.proc.stdout if stream == "stdout" else self.proc.stderr
        # After readiness the pipe is drained into the log so the server never blocks on it.
        self._pipe = pipe
        deadline = time.monotonic() + 20
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise RuntimeError(f"{argv[0]} did not report readiness: {self.lines}")
            r, _, _ = select.select([pipe], [], [], left)
            if not r:
                continue
            chunk = os.read(pipe.fileno(), 4096)
            if not chunk:
                self.stop()
                raise RuntimeError(f"{argv[0]} exited before readiness: {self.lines}")
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                self.lines.append(text)
                m = re.search(ready_re, text)
                if m:
                    self.match = m
                    return

    def drain(self):
        try:
            while select.select([self._pipe], [], [], 0)[0]:
                chunk = os.read(self._pipe.fileno(), 65536)
                if not chunk:
                    break
                self.log.write(chunk)
        except (OSError, ValueError):
            pass

    def rss_kib(self):
        for line in open(f"/proc/{self.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stop(self, timeout=10):
        """SIGTERM, wait, then SIGKILL; only this process (by PID)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.drain()
        self.log.close()
        return self.proc.returncode


class Bench:
    def __init__(self, args, bins, tmp):
        self.a = args
        self.bins = bins
        self.tmp = Path(tmp)
        self.seq = 0
        self.problems = []

    def path(self, stem, ext):
        self.seq += 1
        return self.tmp / f"{self.seq:03d}-{stem}.{ext}"

    def stopped(self, srv):
        code = srv.stop()
        if code != 0:
            self.problems.append(f"{Path(srv.proc.args[3]).name} (pid {srv.pid}) exited {code} on SIGTERM")

    # -- servers

    def sockchat(self, transport, mode="echo", extra=(), binary=None):
        binary = binary or self.bins["server"]
        sock = self.path("sockchat", "sock")
        listen = ["--tcp", "127.0.0.1:0"] if transport == "tcp" else ["--unix", str(sock)]
        argv = [str(binary), "--cores", "1", "--mode", mode, *listen, *extra]
        srv = Server(argv, self.a.server_cpu, r"^ready$", "stdout", self.tmp / "server.log")
        if transport == "tcp":
            port = next(re.match(r"listening tcp (\S+)$", l).group(1)
                        for l in srv.lines if l.startswith("listening tcp"))
            srv.target = ["--tcp", port]
        else:
            srv.target = ["--unix", str(sock)]
        return srv

    def raw_server(self, transport):
        sock = self.path("raw", "sock")
        listen = ["--tcp", "127.0.0.1:0"] if transport == "tcp" else ["--unix", str(sock)]
        argv = [str(self.bins["loadgen"]), "raw-server", *listen, "--threads", "1",
                "--cpus", str(self.a.server_cpu)]
        srv = Server(argv, self.a.server_cpu, r"raw-server listening on (tcp|unix):(\S+)",
                     "stderr", self.tmp / "raw-server.log")
        srv.target = [f"--{srv.match.group(1)}", srv.match.group(2)]
        return srv

    # -- loadgen

    def loadgen(self, scenario, srv, args, label, duration=None, warmup=None):
        duration = self.a.duration if duration is None else duration
        warmup = self.a.warmup if warmup is None else warmup
        js = self.path(label, "json")
        cmd = [str(self.bins["loadgen"]), scenario, *srv.target, *args, "--threads", "1",
               "--cpus", str(self.a.loadgen_cpu), "--warmup", str(warmup), "--duration",
               str(duration), "--quiet", "--server-pid", str(srv.pid), "--label", label,
               "--json", str(js)]
        budget = warmup + duration + 120
        m0 = Meter(srv.pid)
        p = subprocess.run(["taskset", "-c", str(self.a.loadgen_cpu)] + cmd,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=budget)
        other = m0.other_cpu_pct()
        srv.drain()
        if not js.exists():
            raise RuntimeError(f"loadgen {scenario} wrote no report (exit {p.returncode}):\n"
                               + p.stdout.decode(errors="replace"))
        rep = json.load(open(js))
        if p.returncode != 0:
            self.problems.append(f"{label}: loadgen exit {p.returncode}: "
                                 + "; ".join(rep["results"].get("problems", [])))
        rep["_path"] = str(js)
        rep["_other_cpu_pct"] = other
        rep["_cmd"] = " ".join(["loadgen", scenario, *display_target(srv.target), *args])
        return rep

    def hmac(self, seconds):
        out = subprocess.run(["taskset", "-c", str(self.a.server_cpu), str(self.bins["hmac"]),
                              str(seconds)], stdout=subprocess.PIPE, check=True, timeout=60)
        return json.loads(out.stdout)


def cpu_stat():
    """(busy, total) jiffies of the whole machine, from /proc/stat. Steal counts as busy
    (the hypervisor gave the time to someone else); irq and softirq time is left out of
    both, since loopback networking of our own processes is mostly accounted there."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    user, nice, system, idle, iowait, _irq, _softirq, steal = (f + [0] * 8)[:8]
    busy = user + nice + system + steal
    return busy, busy + idle + iowait


def proc_cpu(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])  # utime + stime, jiffies
    except (OSError, IndexError):
        return 0


class Meter:
    """How much CPU other processes (not this server, not loadgen) used during one loadgen
    run, in percent of the machine: the noise indicator of that run."""

    def __init__(self, server_pid):
        self.pid = server_pid
        self.stat0 = cpu_stat()
        self.srv0 = proc_cpu(server_pid)
        self.kids0 = children_cpu()

    def other_cpu_pct(self):
        busy1, total1 = cpu_stat()
        busy = busy1 - self.stat0[0]
        total = total1 - self.stat0[1]
        hz = os.sysconf("SC_CLK_TCK")
        ours = (proc_cpu(self.pid) - self.srv0) + (children_cpu() - self.kids0) * hz
        if total <= 0:
            return None
        return round(max(0.0, busy - ours) * 100.0 / total, 1)


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def display_target(target):
    flag, value = target
    if flag == "--tcp":
        return ["--tcp", "127.0.0.1:PORT"]
    return ["--unix", "SOCK"]


def summary(rep):
    r = rep["results"]
    return {
        "messages_per_sec": r["messages_per_sec"],
        "bytes_per_sec": r["bytes_per_sec"],
        "latency_p50_us": r["latency_us"]["p50"],
        "latency_p99_us": r["latency_us"]["p99"],
        "latency_p999_us": r["latency_us"]["p999"],
        "errors": r["errors_total"],
        "sessions": f'{r["sessions_established"]}/{r["sessions_requested"]}',
        "server_cpu_ns_per_msg": rep["cpu"].get("server_cpu_ns_per_msg"),
        "loadgen_cpu_ns_per_msg": rep["cpu"].get("loadgen_cpu_ns_per_msg"),
        "other_cpu_pct": rep.get("_other_cpu_pct"),
    }


# --------------------------------------------------------------------------- cases
#
# A case is a dict: name, title, group, unit, better ("higher"/"lower"), metric (the value
# taken from a run), subject(bench, i) -> run, baseline(bench, i) -> run or None, target.
# A "run" is {"value": float, "detail": {...}, "report": loadgen report or None}.

def lg_run(metric):
    def take(rep):
        s = summary(rep)
        return {"value": s[metric], "detail": s, "report": rep}
    return take


def echo_case(name, transport, depth, quick=False):
    args = ["--sessions", "100", "--depth", str(depth), "--size", "64"]
    target = {"kind": "ratio", "op": ">=", "value": 0.6} if depth == 16 else None

    def subject(b, i):
        srv = b.sockchat(transport)
        try:
            return lg_run("messages_per_sec")(b.loadgen("echo", srv, args, f"{name}"))
        finally:
            b.stopped(srv)

    def baseline(b, i):
        srv = b.raw_server(transport)
        try:
            return lg_run("messages_per_sec")(b.loadgen("raw-echo", srv, args, f"{name}-raw"))
        finally:
            b.stopped(srv)

    return {
        "name": name, "group": "echo",
        "title": f"echo 64 B, depth {depth}, 100 sessions, {transport.upper() if transport == 'tcp' else 'Unix'}",
        "unit": "msg/s", "better": "higher", "subject": subject, "baseline": baseline,
        "baseline_title": "loadgen raw-server (raw-echo, same options)",
        "target": target,
    }


def echo_1m_case(name, chunked):
    args = ["--sessions", "4", "--depth", "1", "--size", str(1 << 20)]
    if chunked:
        args += ["--chunked", "--chunk-size", str(64 << 10)]

    def subject(b, i):
        srv = b.sockchat("unix")
        try:
            return lg_run("bytes_per_sec")(b.loadgen("echo", srv, args, name))
        finally:
            b.stopped(srv)

    def baseline(b, i):
        h = b.hmac(b.a.hmac_seconds)
        return {"value": h["bytes_per_sec"], "detail": h, "report": None}

    return {
        "name": name, "group": "echo-1m",
        "title": "echo 1 MiB over Unix, " + ("chunked (64 KiB chunks)" if chunked else "plain (one frame)")
                 + ", 4 sessions, depth 1",
        "unit": "B/s", "better": "higher", "subject": subject, "baseline": baseline,
        "baseline_title": "single-core HMAC-SHA256 (Key::sign over 1 MiB, server's core)",
        "target": {"kind": "ratio", "op": ">=", "value": 0.6},
    }


def churn_case(name, transport):
    args = ["--sessions", "16"]

    def subject(b, i):
        srv = b.sockchat(transport)
        try:
            return lg_run("messages_per_sec")(b.loadgen("churn", srv, args, name))
        finally:
            b.stopped(srv)

    def baseline(b, i):
        srv = b.raw_server(transport)
        try:
            return lg_run("messages_per_sec")(b.loadgen("raw-churn", srv, args, f"{name}-raw"))
        finally:
            b.stopped(srv)

    return {
        "name": name, "group": "churn",
        "title": f"churn (connect, handshake, disconnect, close), 16 loops, {transport.upper() if transport == 'tcp' else 'Unix'}",
        "unit": "sessions/s", "better": "higher", "subject": subject, "baseline": baseline,
        "baseline_title": "loadgen raw-server (raw-churn: connect/accept/close)",
        "target": {"kind": "ratio", "op": ">=", "value": 0.5},
    }


def heartbeat_case(name, sessions, transport="tcp", gate=True):
    args = ["--sessions", str(sessions), "--interval", "1", "--ramp", "5000"]

    def subject(b, i):
        srv = b.sockchat(transport)
        try:
            return lg_run("latency_p99_us")(b.loadgen("heartbeat", srv, args, name,
                                                       warmup=max(b.a.warmup, 2)))
        finally:
            b.stopped(srv)

    return {
        "name": name, "group": "heartbeat",
        "title": f"heartbeat, {sessions:,} sessions pinging every 1 s, {transport.upper() if transport == 'tcp' else 'Unix'}: p99 pong latency",
        "unit": "µs", "better": "lower", "subject": subject, "baseline": None,
        "target": {"kind": "absolute", "op": "<=", "value": 2000.0} if gate else None,
    }


def idle_memory_case(name, sessions=5000):
    def subject(b, i):
        srv = b.sockchat("unix", extra=["--session-timeout", "5m"])
        try:
            # Warm-up: allocator arenas, runtime slabs and buffer pools reach their working
            # size before "before" is read.
            b.loadgen("echo", srv, ["--sessions", "200", "--depth", "4", "--size", "1024"],
                      f"{name}-warmup", duration=1, warmup=0.5)
            time.sleep(0.5)
            fds0, rss0 = srv.fds(), srv.rss_kib()
            args = ["--sessions", str(sessions), "--interval", "600", "--ramp", "5000"]
            hold = 6.0
            js = b.path(name, "json")
            cmd = [str(b.bins["loadgen"]), "heartbeat", *srv.target, *args, "--threads", "1",
                   "--cpus", str(b.a.loadgen_cpu), "--warmup", "0", "--duration", str(hold),
                   "--quiet", "--label", name, "--json", str(js)]
            lg = subprocess.Popen(["taskset", "-c", str(b.a.loadgen_cpu)] + cmd,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 30
            while srv.fds() < fds0 + sessions and time.monotonic() < deadline:
                time.sleep(0.1)
                srv.drain()
            time.sleep(1.0)
            fds1, rss1 = srv.fds(), srv.rss_kib()
            out, _ = lg.communicate(timeout=120)
            rep = json.load(open(js))
            r = rep["results"]
            if lg.returncode != 0 or r["sessions_established"] < sessions:
                b.problems.append(f"{name}: loadgen exit {lg.returncode}, "
                                  f"{r['sessions_established']}/{sessions} sessions")
            per = (rss1 - rss0) * 1024 / sessions
            detail = {"rss_before_kib": rss0, "rss_after_kib": rss1, "fds_before": fds0,
                      "fds_after": fds1, "sessions": r["sessions_established"],
                      "bytes_per_session": round(per, 1)}
            return {"value": per, "detail": detail, "report": None}
        finally:
            b.stopped(srv)

    return {
        "name": name, "group": "memory",
        "title": f"idle memory per session, {sessions:,} established idle sessions, Unix (server user-space RSS)",
        "unit": "B/session", "better": "lower", "subject": subject, "baseline": None,
        "target": {"kind": "absolute", "op": "<=", "value": 1024.0},
    }


def fanout_case(name, sessions=1000, reference=100):
    def run(b, n, label):
        srv = b.sockchat("unix", mode="chat")
        try:
            args = ["--sessions", str(n), "--rate", "10", "--ramp", "5000"]
            return lg_run("latency_p99_us")(b.loadgen("fanout", srv, args, label))
        finally:
            b.stopped(srv)

    return {
        "name": name, "group": "fanout",
        "title": f"chat fan-out to {sessions:,} sessions, Unix, 10 msg/s: p99 send → last delivery",
        "unit": "µs", "better": "lower",
        "subject": lambda b, i: run(b, sessions, name),
        "baseline": lambda b, i: run(b, reference, f"{name}-{reference}"),
        "baseline_title": f"the same fan-out to {reference} sessions (ratio = latency {sessions} / latency {reference}; no target)",
        "target": None,
    }


def full_cases():
    return [
        echo_case("echo64-d1-tcp", "tcp", 1),
        echo_case("echo64-d1-unix", "unix", 1),
        echo_case("echo64-d16-tcp", "tcp", 16),
        echo_case("echo64-d16-unix", "unix", 16),
        echo_1m_case("echo1m-unix", chunked=False),
        echo_1m_case("echo1m-chunked-unix", chunked=True),
        churn_case("churn-tcp", "tcp"),
        churn_case("churn-unix", "unix"),
        heartbeat_case("heartbeat-5k", 5000),
        idle_memory_case("idle-memory-5k"),
        fanout_case("fanout-1000"),
    ]


def quick_cases():
    return [
        echo_case("echo64-d16-tcp", "tcp", 16),
        echo_case("echo64-d16-unix", "unix", 16),
        churn_case("churn-tcp", "tcp"),
        churn_case("churn-unix", "unix"),
        heartbeat_case("heartbeat-500", 500, gate=False),
    ]


# --------------------------------------------------------------------------- running

def stats(values):
    return {"runs": [round(v, 3) for v in values], "median": statistics.median(values),
            "min": min(values), "max": max(values)}


def standing(case, value):
    """Whether the target is met and by how much (margin_pct > 0: headroom)."""
    t = case["target"]
    if not t or value is None:
        return None
    if t["op"] == ">=":
        met = value >= t["value"]
        margin = (value / t["value"] - 1) * 100
        text = f"met, {margin:.0f}% above" if met else f"missed, {-margin:.0f}% below"
    else:
        met = value <= t["value"]
        margin = (1 - value / t["value"]) * 100
        text = (f"met, {margin:.0f}% under the limit" if met
                else f"missed, {value / t['value']:.2f}× the limit")
    return {"met": met, "margin_pct": round(margin, 1), "text": text}


def run_case(b, case, runs):
    subj, base, pairs = [], [], []
    t0 = time.monotonic()
    for i in range(runs):
        # Interleave, alternating the order (S B, B S, ...) so a drift in the machine's
        # load does not always favour the same side.
        order = ["s", "b"] if i % 2 == 0 else ["b", "s"]
        got = {}
        for side in order:
            if side == "s":
                got["s"] = case["subject"](b, i)
            elif case["baseline"]:
                got["b"] = case["baseline"](b, i)
        subj.append(got["s"])
        if "b" in got:
            base.append(got["b"])
            pairs.append(got["s"]["value"] / got["b"]["value"] if got["b"]["value"] else None)
        line = f"  run {i + 1}/{runs}: {fmt(got['s']['value'], case['unit'])}"
        if "b" in got:
            line += f"  baseline {fmt(got['b']['value'], case['unit'])}  ratio {pairs[-1]:.3f}"
        print(line, flush=True)
    s = stats([r["value"] for r in subj])
    res = {
        "name": case["name"], "title": case["title"], "group": case["group"],
        "unit": case["unit"], "better": case["better"], "subject": s,
        "subject_command": cmd_of(subj[0]),
        "details": [r["detail"] for r in subj],
        "seconds": round(time.monotonic() - t0, 1),
    }
    if base:
        bs = stats([r["value"] for r in base])
        ratio = s["median"] / bs["median"] if bs["median"] else None
        valid = [p for p in pairs if p is not None]
        res["baseline"] = dict(bs, title=case["baseline_title"], command=cmd_of(base[0]),
                               details=[r["detail"] for r in base])
        res["ratio"] = {"median_over_median": ratio, "per_run": [round(p, 4) for p in valid],
                        "min": min(valid), "max": max(valid)}
        # Server CPU per message, sockchat / baseline server: far less sensitive to other
        # tenants' load than throughput (contention stretches the wall clock, not the work).
        sc = [r["detail"].get("server_cpu_ns_per_msg") for r in subj]
        bc = [r["detail"].get("server_cpu_ns_per_msg") for r in base]
        if all(sc) and all(bc):
            res["cpu_cost_ratio"] = {
                "median_over_median": statistics.median(sc) / statistics.median(bc),
                "server_cpu_ns_per_msg": round(statistics.median(sc)),
                "baseline_server_cpu_ns_per_msg": round(statistics.median(bc)),
            }
        value_for_target = ratio
    else:
        res["baseline"] = None
        res["ratio"] = None
        value_for_target = s["median"]
    others = [r["detail"].get("other_cpu_pct") for r in subj + base]
    others = [o for o in others if o is not None]
    if others:
        res["other_cpu_pct"] = {"median": statistics.median(others), "max": max(others)}
    res["target"] = case["target"]
    res["standing"] = standing(case, value_for_target)
    # The median run's loadgen report (for charts and for the CI ratio comparison).
    reps = [r for r in subj if r["report"]]
    if reps:
        med = sorted(reps, key=lambda r: r["value"])[len(reps) // 2]
        res["_report"] = med["report"]
        breps = [r for r in base if r["report"]]
        if breps:
            res["_baseline_report"] = sorted(breps, key=lambda r: r["value"])[len(breps) // 2]["report"]
    return res


def cmd_of(run):
    if run.get("report"):
        return run["report"]["_cmd"]
    return None


def fmt(v, unit):
    if v is None:
        return "–"
    if unit == "B/s":
        return f"{v / 1e6:,.0f} MB/s"
    if unit == "µs":
        return f"{v:,.0f} µs"
    if unit == "B/session":
        return f"{v:,.0f} B"
    return f"{v:,.0f} {unit}"


def machine_info():
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {"cpu_model": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "memory_mib": mem, "os": platform.platform(terse=True)}


def git(*args):
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True).stdout.strip()
    except OSError:
        return ""


# --------------------------------------------------------------------------- output

def ratio_report(res):
    """The median run's loadgen report with its metrics replaced by the case's ratios, so
    `loadgen compare` compares exactly the ratios: messages_per_sec := the throughput
    ratio (higher is better), cpu.server_cpu_ns_per_msg := the server CPU cost ratio
    (sockchat / raw per message, lower is better); latencies are zeroed and loadgen's own
    CPU cost removed (compare skips metrics whose base is 0 or absent); histograms and
    timeline dropped."""
    rep = json.loads(json.dumps({k: v for k, v in res["_report"].items() if not k.startswith("_")}))
    rep["label"] = f'{res["name"]} ratios (sockchat / baseline)'
    r = rep["results"]
    r["messages_per_sec"] = res["ratio"]["median_over_median"]
    r["bytes_per_sec"] = 0.0
    r["latency_us"] = {k: 0 for k in r["latency_us"]}
    r["latencies_us"] = {}
    r["histograms"] = {}
    rep["timeline"] = []
    rep["cpu"]["loadgen_cpu_ns_per_msg"] = None
    cost = res.get("cpu_cost_ratio")
    rep["cpu"]["server_cpu_ns_per_msg"] = cost["median_over_median"] if cost else None
    return rep


def print_table(results):
    print()
    print(f'{"case":20} {"value (median)":>17} {"baseline":>17} {"ratio":>7} {"cost":>6} '
          f'{"other":>6}  {"range":>29}  target')
    for r in results:
        u = r["unit"]
        base = fmt(r["baseline"]["median"], u) if r["baseline"] else "–"
        ratio = f'{r["ratio"]["median_over_median"]:.3f}' if r["ratio"] else "–"
        cost = f'{r["cpu_cost_ratio"]["median_over_median"]:.2f}' if r.get("cpu_cost_ratio") else "–"
        other = f'{r["other_cpu_pct"]["median"]:.0f}%' if r.get("other_cpu_pct") else "–"
        rng = f'{fmt(r["subject"]["min"], u)} – {fmt(r["subject"]["max"], u)}'
        st = r["standing"]["text"] if r["standing"] else ""
        print(f'{r["name"]:20} {fmt(r["subject"]["median"], u):>17} {base:>17} {ratio:>7} {cost:>6} '
              f'{other:>6}  {rng:>29}  {target_text(r)} {st}')
    print("ratio = value / baseline (medians); cost = server CPU per message / baseline's; "
          "other = CPU used by other processes during the case (median of runs, % of the machine)")
    print()


def target_text(r):
    t = r["target"]
    if not t:
        return "(no target)"
    if t["kind"] == "ratio":
        return f'ratio {t["op"]} {t["value"]}'
    return f'{t["op"]} {fmt(t["value"], r["unit"])}'


def compare_with_baseline(bins, results, tmp, max_regression, busy_threshold):
    """CI gate: per case, the throughput ratio (sockchat / raw, as messages_per_sec) goes
    through `loadgen compare`, which also fails on errors or missing sessions. The ratio
    is gated only when other processes used less than busy_threshold percent of the CPUs
    during the case: on a busy shared machine, scheduling delays cut sockchat's
    multi-round-trip cycles far more than the raw server's, so the ratio then measures the
    neighbours, not the code. The server CPU cost ratio is printed but not gated: it moved
    by 30-60% between a quiet and a moderately loaded run of the same binaries here."""
    if not BASELINE.exists():
        print(f"no {BASELINE.relative_to(REPO)}: nothing to compare (create it with "
              "`ci/bench.sh --quick --update-baseline`)")
        return True
    base = json.load(open(BASELINE))
    ok = True
    print(f"== ratio regression check against {BASELINE.relative_to(REPO)} "
          f"(commit {base.get('commit')}), loadgen compare --max-regression {max_regression}")
    print("   messages_per_sec = throughput ratio sockchat / raw (higher is better); the CPU")
    print("   cost ratio (server CPU per message, sockchat / raw) is shown, not gated")
    for r in results:
        if not r.get("ratio") or "_report" not in r:
            continue
        entry = base.get("cases", {}).get(r["name"])
        if not entry:
            print(f"-- {r['name']}: not in the baseline, not compared")
            continue
        other = (r.get("other_cpu_pct") or {}).get("median", 0.0)
        gate_tp = other < busy_threshold
        brep = json.loads(json.dumps(entry["ratio_report"]))
        nrep = ratio_report(r)
        if not gate_tp:
            brep["results"]["messages_per_sec"] = 0.0
            nrep["results"]["messages_per_sec"] = 0.0
        brep["cpu"]["server_cpu_ns_per_msg"] = None
        nrep["cpu"]["server_cpu_ns_per_msg"] = None
        bpath, npath = tmp / f"cmp-{r['name']}-base.json", tmp / f"cmp-{r['name']}-new.json"
        json.dump(brep, open(bpath, "w"))
        json.dump(nrep, open(npath, "w"))
        cost = r.get("cpu_cost_ratio", {}).get("median_over_median")
        bcost = entry["ratio_report"]["cpu"].get("server_cpu_ns_per_msg")
        print(f"-- {r['name']}: throughput ratio {entry['ratio']:.3f} -> "
              f"{r['ratio']['median_over_median']:.3f}"
              + ("" if gate_tp else f" (not gated: other processes used {other:.0f}% of the "
                                    f"CPUs, threshold {busy_threshold:.0f}%)")
              + (f"; CPU cost ratio {bcost:.3f} -> {cost:.3f} (not gated)" if cost and bcost else ""))
        p = subprocess.run([str(bins["loadgen"]), "compare", str(bpath), str(npath),
                            "--max-regression", str(max_regression)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(p.stdout, end="")
        if p.returncode != 0:
            ok = False
    return ok


def write_baseline(results, info):
    cases = {}
    for r in results:
        if r["ratio"] and "_report" in r:
            cases[r["name"]] = {"title": r["title"], "ratio": r["ratio"]["median_over_median"],
                                "cpu_cost_ratio": r.get("cpu_cost_ratio"),
                                "other_cpu_pct": r.get("other_cpu_pct"),
                                "ratio_report": ratio_report(r)}
    doc = {"about": "ratios of the quick load suite (ci/bench.sh --quick --update-baseline); "
                    "CI fails when one gets worse by more than 30% (loadgen compare on ratio reports)",
           "commit": info["commit"], "date": info["date"], "machine": info["machine"],
           "load_average": info["load_average"], "settings": info["settings"], "cases": cases}
    with open(BASELINE, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {BASELINE.relative_to(REPO)}")


def charts(bins, results, tmp, outdir):
    """SVG charts through `loadgen report` on the median runs of representative cases."""
    groups = {
        "echo-64": [r for r in results if r["group"] == "echo"],
        "churn": [r for r in results if r["group"] == "churn"],
        "latency": [r for r in results if r["group"] in ("heartbeat", "fanout")],
        "echo-1m": [r for r in results if r["group"] == "echo-1m"],
    }
    made = {}
    for gname, rs in groups.items():
        paths = []
        for r in rs:
            for key in ("_report", "_baseline_report"):
                if key in r:
                    paths.append(r[key]["_path"])
        if not paths:
            continue
        out = outdir / gname
        if out.exists():
            shutil.rmtree(out)
        p = subprocess.run([str(bins["loadgen"]), "report", *paths, "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode == 0:
            md = out / "README.md"
            # The runs' JSON lived in a temp dir: keep just the file names.
            md.write_text(md.read_text().replace(str(tmp) + "/", ""))
            made[gname] = out
        else:
            print(f"loadgen report for {gname} failed:\n{p.stdout}")
    return made


def write_readme(doc, made, json_name):
    m = doc["machine"]
    la = doc["load_average"]
    lines = [
        "# sockchat load benchmarks",
        "",
        "Generated by `ci/bench.sh` (do not edit by hand; re-run it). Raw figures of this run: "
        f"[`{json_name}`]({json_name}).",
        "",
        f"- Commit: `{doc['commit']}`{' (with uncommitted changes)' if doc['dirty'] else ''}, "
        f"run {doc['date']} ({doc['started_utc']}), {doc['duration_s'] / 60:.1f} min",
        f"- Machine: {m['cpu_model']}, {m['cores']} CPUs, {m['memory_mib']:,} MiB, "
        f"Linux {m['kernel']}",
        f"- Load average (1/5/15 min): {fmt_load(la['start'])} at the start, "
        f"{fmt_load(la['end'])} at the end"
        + (" — the machine was shared with other builds and tests; absolute figures are "
           "noisy, the ratios (measured interleaved) less so" if max(la["start"][0], la["end"][0]) > 1.0 else ""),
        f"- Each case: {doc['settings']['runs']} run(s) interleaved with its baseline "
        f"(order alternating), {doc['settings']['warmup']} s warm-up + "
        f"{doc['settings']['duration']} s measured per run; sockchat-server `--cores 1` "
        f"pinned to CPU {doc['settings']['server_cpu']}, loadgen `--threads 1` pinned to "
        f"CPU {doc['settings']['loadgen_cpu']}; a fresh server process per run",
        "",
        "## Targets",
        "",
        "| target | measured | standing |",
        "| --- | --- | --- |",
    ]
    for r in doc["cases"]:
        if not r["target"]:
            continue
        if r["ratio"]:
            meas = f'ratio {r["ratio"]["median_over_median"]:.3f} ({fmt(r["subject"]["median"], r["unit"])} / {fmt(r["baseline"]["median"], r["unit"])})'
        else:
            meas = fmt(r["subject"]["median"], r["unit"])
        st = r["standing"]
        mark = "✅" if st["met"] else "❌"
        lines.append(f'| {r["title"]}: {target_text(r)} | {meas} | {mark} {st["text"]} |')
    lines += [
        "",
        "## Every case",
        "",
        "Value and baseline are medians of the runs; ratio = median / baseline median "
        "(per-run ratios in the JSON); range = min – max of the case's runs.",
        "",
        "Server CPU/msg: the server's CPU time per message (churn: per cycle), medians, "
        "sockchat vs baseline server and their ratio (lower is cheaper). Other CPU: share "
        "of the machine's CPU time used by processes other than this server and loadgen "
        "during the case's runs (median / max) — the noise indicator.",
        "",
        "| case | value | baseline | ratio | range (runs) | server CPU/msg (ratio) | other CPU | baseline is |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in doc["cases"]:
        u = r["unit"]
        base = fmt(r["baseline"]["median"], u) if r["baseline"] else "–"
        ratio = f'{r["ratio"]["median_over_median"]:.3f}' if r["ratio"] else "–"
        rng = f'{fmt(r["subject"]["min"], u)} – {fmt(r["subject"]["max"], u)}'
        bt = r["baseline"]["title"] if r["baseline"] else "none (absolute figure)"
        c = r.get("cpu_cost_ratio")
        cost = (f'{c["server_cpu_ns_per_msg"]:,} / {c["baseline_server_cpu_ns_per_msg"]:,} ns '
                f'({c["median_over_median"]:.2f})') if c else "–"
        o = r.get("other_cpu_pct")
        other = f'{o["median"]:.0f}% / {o["max"]:.0f}%' if o else "–"
        lines.append(f'| {r["title"]} | **{fmt(r["subject"]["median"], u)}** | {base} | {ratio} '
                     f'| {rng} | {cost} | {other} | {bt} |')
    lines += ["", "## Notes on method", ""]
    bound = client_bound_notes(doc["cases"])
    if bound:
        lines += bound
    lines += [
        "- Echo and churn baselines: `loadgen raw-server`, a minimal monoio echo server "
        "without the protocol, on the same core with the same loadgen options "
        "(`raw-echo` / `raw-churn`). Churn counts complete cycles per second: "
        "sockchat's cycle is connect, session_init, session_ack, disconnect, close; raw's "
        "is connect, accept, close.",
        "- 1 MiB echo: the value is echoed payload bytes per second (one direction; the "
        "server verifies the HMAC of every received byte and signs every byte it sends "
        "back). Baseline: `proto/examples/hmac_throughput.rs` (`Key::sign` over 1 MiB "
        "buffers, ~2 s, pinned to the server's CPU), run between the echo runs.",
        "- Heartbeat: `loadgen heartbeat` with every session pinging once per second "
        "(staggered); the value is the p99 of ping→pong latency over the measured window.",
        "- Idle memory: a fresh server, warmed up by a 1 s echo with 200 sessions; VmRSS "
        "from `/proc/PID/status` is read, then 5,000 sessions are established (handshake "
        "done) and left idle; 1 s after the last one is accepted VmRSS is read again; "
        "value = (after − before) / 5,000. RSS is the server process's **user-space** "
        "memory: kernel socket buffers (≈ 4–5 KB per idle socket on this kernel) are not "
        "in it.",
        "- Fan-out: `--mode chat`, `loadgen fanout` (one sender at 10 msg/s, every other "
        "session receives); value = p99 from send to the last session's delivery. There is "
        "no natural baseline: the baseline column is the same fan-out to 100 sessions, "
        "ratio = p99(1,000) / p99(100), shown for scale, no target.",
    ]
    if doc.get("problems"):
        lines += ["", "## Problems during the run", ""] + [f"- {p}" for p in doc["problems"]]
    if made:
        lines += ["", "## Charts (median runs, from `loadgen report`)", ""]
        for g, out in made.items():
            rel = out.relative_to(RESULTS)
            lines += [f"### {g}", "",
                      f"[runs table]({rel}/README.md)", "",
                      f"![latency percentiles]({rel}/latency.svg)", "",
                      f"![throughput per second]({rel}/throughput.svg)", ""]
    others = sorted(f for f in RESULTS.glob("20??-??-??-*.json") if f.name != json_name)
    if others:
        lines += ["", "## Other runs (raw figures)", ""]
        for f in others:
            try:
                o = json.load(open(f))
                la = o["load_average"]
                base = o["settings"].get("base_rev")
                tool = (o.get("loadgen_tool") or {}).get("git_commit", "?")[:7]
                lines.append(f'- [`{f.name}`]({f.name}): {o["suite"]} suite at `{o["commit"]}` '
                             f'(loadgen built from `{tool}`), '
                             f'{o["started_utc"]}, load {fmt_load(la["start"])} → '
                             f'{fmt_load(la["end"])}'
                             + (f"; includes the second-build comparison with `{base}` "
                                f"(ratio this build / {base}, medians, other processes' CPU "
                                f"share in brackets): " + ", ".join(
                                    f'{c["name"]} {c["ratio"]["median_over_median"]:.2f} '
                                    f'[{c.get("other_cpu_pct", {}).get("median", 0):.0f}%]'
                                    for c in o["cases"] if c["group"] == "base-rev" and c["ratio"])
                                if base else ""))
            except (OSError, ValueError, KeyError):
                lines.append(f"- [`{f.name}`]({f.name})")
    lines += [
        "",
        "## Reproduce",
        "",
        "```sh",
        "ci/bench.sh                 # full suite (~%d min here), writes this report" % round(doc["duration_s"] / 60),
        "ci/bench.sh --quick         # CI check: short runs, ratios compared with baseline.json",
        "BASE_REV=<git rev> ci/bench.sh   # also measures that revision's server, interleaved",
        "```",
        "",
        "Commands per case (`PORT`/`SOCK` are the per-run listener; every loadgen also gets "
        "`--threads 1 --cpus 1 --warmup W --duration D --server-pid PID --json FILE`):",
        "",
    ]
    for r in doc["cases"]:
        if r.get("subject_command"):
            lines.append(f'- {r["name"]}: `{r["subject_command"]}`'
                         + (f' vs `{r["baseline"]["command"]}`' if r["baseline"] and r["baseline"].get("command") else ""))
    lines.append("")
    (RESULTS / "README.md").write_text("\n".join(lines))
    print(f"wrote {(RESULTS / 'README.md').relative_to(REPO)}")


def client_bound_notes(cases):
    """Echo/churn baselines whose loadgen side spent far more CPU per message than in
    the sockchat run are limited by loadgen's raw client, not by the raw server: say so,
    since the throughput ratio then overstates sockchat (the CPU cost ratio does not)."""
    out = []
    for r in cases:
        if not r.get("baseline") or r["group"] not in ("echo", "churn"):
            continue
        lg = [d.get("loadgen_cpu_ns_per_msg") for d in r["details"]]
        blg = [d.get("loadgen_cpu_ns_per_msg") for d in r["baseline"]["details"]]
        if not (all(lg) and all(blg)):
            continue
        a, b = statistics.median(lg), statistics.median(blg)
        if b > 2 * a:
            out.append(f'- **{r["name"]}: the baseline is bound by loadgen\'s raw client**, not '
                       f'by the raw server: loadgen spent {b:,.0f} ns of CPU per message '
                       f'against the raw server vs {a:,.0f} ns against sockchat-server '
                       f'(loadgen\'s `raw-echo` writes one message per write, `echo` batches '
                       f'the whole window). The throughput ratio overstates sockchat here; '
                       f'the server CPU/msg ratio is the fair comparison.')
    return out


def fmt_load(l):
    return " / ".join(f"{x:.2f}" for x in l)


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True, type=Path)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--update-baseline", action="store_true")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--hmac-seconds", type=float, default=2.0)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--loadgen-cpu", type=int, default=1)
    ap.add_argument("--max-regression", type=float, default=30.0)
    ap.add_argument("--busy-threshold", type=float, default=5.0,
                    help="quick: gate the throughput ratios only when other processes used "
                         "less than this percent of the CPUs (default 5)")
    ap.add_argument("--only", help="comma-separated case names (full mode: no files written)")
    ap.add_argument("--keep", type=Path, help="copy every raw loadgen report here")
    ap.add_argument("--base-server", type=Path, help="(set by bench.sh from BASE_REV)")
    ap.add_argument("--base-rev", default="")
    ap.add_argument("--render-only", type=Path, metavar="RUN.json",
                    help="regenerate bench-results/README.md from a committed run's JSON "
                         "(charts left as they are)")
    a = ap.parse_args()
    if a.render_only:
        doc = json.load(open(a.render_only))
        made = {g: RESULTS / "charts" / g for g in ("echo-64", "churn", "latency", "echo-1m")
                if (RESULTS / "charts" / g / "README.md").exists()}
        write_readme(doc, made, a.render_only.name)
        return 0
    if a.runs is None:
        a.runs = (5 if a.update_baseline else 3) if a.quick else 3
    if a.warmup is None:
        a.warmup = 0.5 if a.quick else 1.0
    if a.duration is None:
        a.duration = 2.0 if a.quick else 5.0

    bins = {"server": a.bin_dir / "sockchat-server", "loadgen": a.bin_dir / "loadgen",
            "hmac": a.bin_dir / "examples" / "hmac_throughput"}
    cases = quick_cases() if a.quick else full_cases()
    if a.base_server:
        cases += base_rev_cases(a.base_server, a.base_rev)
    if a.only:
        want = set(a.only.split(","))
        cases = [c for c in cases if c["name"] in want]

    started = time.time()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--", "server", "loadgen", "proto", "Cargo.lock"))
    load_start = list(os.getloadavg())
    print(f"sockchat bench ({'quick' if a.quick else 'full'}): {len(cases)} cases, {a.runs} run(s) each, "
          f"commit {commit}{' +changes' if dirty else ''}, load average {fmt_load(load_start)}", flush=True)

    results = []
    with tempfile.TemporaryDirectory(prefix="sockchat-bench-") as tmp:
        tmp = Path(tmp)
        b = Bench(a, bins, tmp)
        for c in cases:
            print(f"== {c['name']}: {c['title']}", flush=True)
            results.append(run_case(b, c, a.runs))
        load_end = list(os.getloadavg())
        duration = time.time() - started
        print_table(results)
        print(f"load average {fmt_load(load_start)} at the start, {fmt_load(load_end)} at the end; "
              f"{duration:.0f} s")
        for p in b.problems:
            print(f"problem: {p}")
        if a.keep:
            a.keep.mkdir(parents=True, exist_ok=True)
            for f in tmp.glob("*.json"):
                shutil.copy(f, a.keep)

        now = dt.datetime.now(dt.timezone.utc)
        info = {
            "schema": SCHEMA, "suite": "quick" if a.quick else "full",
            "commit": commit, "commit_full": git("rev-parse", "HEAD"), "dirty": dirty,
            "date": now.strftime("%Y-%m-%d"), "started_utc": dt.datetime.fromtimestamp(started, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "duration_s": round(duration, 1),
            "machine": machine_info(),
            "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in load_end]},
            "settings": {"runs": a.runs, "warmup": a.warmup, "duration": a.duration,
                         "server_cpu": a.server_cpu, "loadgen_cpu": a.loadgen_cpu,
                         "base_rev": a.base_rev or None},
            "loadgen_tool": next((r["_report"]["tool"] for r in results if "_report" in r), None),
            "problems": b.problems,
        }

        if a.quick:
            if a.update_baseline:
                write_baseline(results, info)
                return 0
            ok = compare_with_baseline(bins, results, tmp, a.max_regression, a.busy_threshold)
            if b.problems:
                print("FAIL: loadgen reported errors (see problems above)")
                ok = False
            print("load check: " + ("PASS" if ok else "FAIL"))
            return 0 if ok else 1

        if a.only:
            print("--only: partial run, no files written")
            return 0
        doc = dict(info, cases=[{k: v for k, v in r.items() if not k.startswith("_")} for r in results])
        name = f"{info['date']}-{commit}.json"
        with open(RESULTS / name, "w") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(f"wrote bench-results/{name}")
        made = charts(bins, results, tmp, RESULTS / "charts")
        write_readme(doc, made, name)
    return 0


def base_rev_cases(binary, rev):
    """With BASE_REV: the same sockchat cases against a second build (the base revision),
    interleaved; ratio = this build / base build."""
    def pair(name, scenario, transport, args, metric, title, unit, better):
        def run(b, which, label):
            srv = b.sockchat(transport, binary=(None if which == "this" else binary))
            try:
                return lg_run(metric)(b.loadgen(scenario, srv, args, label))
            finally:
                b.stopped(srv)
        return {"name": name, "group": "base-rev", "title": f"{title} (vs {rev})", "unit": unit,
                "better": better, "subject": lambda b, i: run(b, "this", name),
                "baseline": lambda b, i: run(b, "base", f"{name}-base"),
                "baseline_title": f"sockchat-server built from {rev}", "target": None}
    echo = ["--sessions", "100", "--depth", "16", "--size", "64"]
    return [
        pair("base-echo64-d16-unix", "echo", "unix", echo, "messages_per_sec",
             "echo 64 B, depth 16, Unix", "msg/s", "higher"),
        pair("base-echo64-d16-tcp", "echo", "tcp", echo, "messages_per_sec",
             "echo 64 B, depth 16, TCP", "msg/s", "higher"),
        pair("base-churn-tcp", "churn", "tcp", ["--sessions", "16"], "messages_per_sec",
             "churn, TCP", "sessions/s", "higher"),
        pair("base-heartbeat-5k", "heartbeat", "tcp",
             ["--sessions", "5000", "--interval", "1", "--ramp", "5000"], "latency_p99_us",
             "heartbeat 5,000 sessions p99", "µs", "lower"),
    ]


if __name__ == "__main__":
    sys.exit(main())
