#!/usr/bin/env python3
"""sockchat-server's data path seen from outside (issue 10's evidence targets), the
counterpart of ci/ring_probe.py (which probes `loadgen raw-server` engines): RSS per idle
session at 1,000 and 5,000 established sessions, the requests pending in each io_uring
instance (/proc/PID/fdinfo) with 1,000 idle sessions, and `strace -c -f -p PID` syscalls
per message under `loadgen echo` load. Run inside /work/tools/quiet-run after
`cargo build --release -p sockchat-server -p loadgen`.

  ci/server_probe.py [--seconds 3] [--out DIR]

Idle sessions are `loadgen heartbeat` sessions pinging every 60 s (so they are idle while
measured: each handshaked, then silent), held while RSS and fdinfo are read.
"""
import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "target" / "release" / "sockchat-server"
LOADGEN = ROOT / "target" / "release" / "loadgen"
OPS = {6: "POLL_ADD", 9: "SENDMSG", 13: "ACCEPT", 22: "READ", 26: "SEND", 27: "RECV"}


def start(sock):
    argv = ["taskset", "-c", "0", str(SERVER), "--cores", "1", "--unix", str(sock),
            "--tcp", "127.0.0.1:19870", "--session-timeout", "5m", "--max-sessions", "20000"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for _ in range(20):
        if "ready" in p.stdout.readline():
            return p
    raise RuntimeError("sockchat-server did not start")


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rings(pid):
    """fdinfo of every io_uring instance of the process: pending ops by opcode."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if "io_uring" not in target:
            continue
        text = open(f"/proc/{pid}/fdinfo/{fd}").read()
        ops = collections.Counter(int(m) for m in re.findall(r"op=(\d+)", text))
        out.append({"fd": int(fd), "pending_by_op": {OPS.get(k, str(k)): v
                                                       for k, v in sorted(ops.items())}})
    return out


def loadgen(args, seconds):
    return subprocess.Popen(["taskset", "-c", "1", str(LOADGEN)] + args,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def hold_idle(sock, pid, n, tmp):
    """RSS, fds and rings while `n` idle heartbeat sessions are held."""
    hold = 8.0
    p = loadgen(["heartbeat", "--unix", str(sock), "--sessions", str(n), "--interval", "60s",
                 "--ramp", "2s", "--warmup", "0", "--duration", str(hold), "--quiet",
                 "--cpus", "1", "--json", str(Path(tmp) / f"hb{n}.json")], hold)
    deadline = time.time() + 30
    base = fds(pid)
    while fds(pid) < base + n and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    got = {"rss": rss(pid), "fds": fds(pid), "rings": rings(pid)}
    p.wait(60)
    time.sleep(0.5)
    return got


def idle(tmp):
    sock = Path(tmp) / "idle.sock"
    p = start(sock)
    # Warm up (first allocations, the pools) with a short echo, then measure growth.
    subprocess.run(["taskset", "-c", "1", str(LOADGEN), "echo", "--unix", str(sock),
                    "--sessions", "10", "--depth", "1", "--warmup", "0", "--duration", "0.5",
                    "--quiet", "--cpus", "1"], stdout=subprocess.DEVNULL, timeout=60)
    time.sleep(0.5)
    r0, f0 = rss(p.pid), fds(p.pid)
    at1k = hold_idle(sock, p.pid, 1000, tmp)
    at5k = hold_idle(sock, p.pid, 5000, tmp)
    p.terminate()
    p.wait(20)
    return {"rss_before": r0, "fds_before": f0,
            "at_1000": at1k, "at_5000": at5k,
            "per_session_1000": (at1k["rss"] - r0) / max(at1k["fds"] - f0, 1),
            "per_session_5000": (at5k["rss"] - r0) / max(at5k["fds"] - f0, 1)}


def strace(tmp, seconds, transport):
    sock = Path(tmp) / "s.sock"
    p = start(sock)
    st = Path(tmp) / f"strace-{transport}.txt"
    js = Path(tmp) / f"echo-{transport}.json"
    target = ["--unix", str(sock)] if transport == "unix" else ["--tcp", "127.0.0.1:19870"]
    lg = loadgen(["echo"] + target + ["--sessions", "100", "--depth", "16", "--size", "64",
                                      "--warmup", "0.5", "--duration", str(seconds + 1.5),
                                      "--quiet", "--cpus", "1", "--json", str(js)], seconds)
    time.sleep(1.0)
    tr = subprocess.Popen(["strace", "-c", "-f", "-p", str(p.pid), "-o", str(st)],
                          stderr=subprocess.DEVNULL)
    t0 = time.time()
    time.sleep(seconds)
    tr.send_signal(signal.SIGINT)
    tr.wait(30)
    elapsed = time.time() - t0
    lg.wait(60)
    p.terminate()
    p.wait(20)
    res = json.load(open(js))["results"]
    rate = res["messages_per_sec"]
    msgs = rate * elapsed
    calls = {}
    for line in open(st):
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m and m.group(2) != "total":
            calls[m.group(2)] = int(m.group(1))
    total = sum(calls.values())
    recv_send = sum(v for k, v in calls.items()
                    if re.match(r"(recv|send|read|write)(v|msg|from|to|mmsg)?$", k))
    return {"messages_while_traced": round(msgs), "syscalls": total,
            "per_msg": total / max(msgs, 1), "recv_send_family": recv_send,
            "recv_send_per_msg": recv_send / max(msgs, 1),
            "top": sorted(calls.items(), key=lambda kv: -kv[1])[:8]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "data-path"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = {"idle": idle(tmp),
               "strace_unix": strace(tmp, a.seconds, "unix"),
               "strace_tcp": strace(tmp, a.seconds, "tcp")}
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "probe.json").write_text(json.dumps(res, indent=1))
    i = res["idle"]
    print(json.dumps(res, indent=1), file=sys.stderr)
    print(f"RSS per idle session: {i['per_session_1000']:,.0f} B at 1,000, "
          f"{i['per_session_5000']:,.0f} B at 5,000 (fds {i['fds_before']} -> "
          f"{i['at_1000']['fds']} / {i['at_5000']['fds']})")
    for g in i["at_1000"]["rings"]:
        ops = ", ".join(f"{k}×{v}" for k, v in g["pending_by_op"].items()) or "none"
        print(f"ring fd {g['fd']} with 1,000 idle sessions: {ops}")
    for t in ("unix", "tcp"):
        s = res[f"strace_{t}"]
        print(f"strace {t}: {s['per_msg']:.4f} syscalls/msg, recv/send/read/write "
              f"{s['recv_send_per_msg']:.4f}/msg over {s['messages_while_traced']:,} msgs; "
              f"top {s['top']}")


if __name__ == "__main__":
    main()
