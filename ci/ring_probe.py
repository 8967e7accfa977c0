#!/usr/bin/env python3
"""What an io_uring data path looks like from outside (issue 10's evidence targets), on
`loadgen raw-server` engines: RSS per idle connection at 1,000 and 5,000, the requests
pending in each io_uring instance (/proc/PID/fdinfo) with idle connections, and
`strace -c -f` syscalls per message under raw-echo load. Run inside /work/tools/quiet-run
after `cargo build --release -p loadgen`.

  ci/ring_probe.py [--engines monoio,ring] [--out DIR]
"""
import argparse
import collections
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = ROOT / "target" / "release" / "loadgen"
OPS = {6: "POLL_ADD", 13: "ACCEPT", 27: "RECV", 26: "SEND", 9: "SENDMSG", 22: "READ"}


def start(engine, sock, strace_out=None):
    argv = [str(LOADGEN), "raw-server", "--unix", str(sock), "--threads", "1", "--cpus", "0",
            "--engine", engine, "--ring", "plain" if engine == "monoio" else "defer"]
    if strace_out:
        argv = ["strace", "-c", "-f", "-o", str(strace_out)] + argv
    p = subprocess.Popen(["taskset", "-c", "0"] + argv, stderr=subprocess.PIPE, text=True)
    for _ in range(50):
        line = p.stderr.readline()
        if "listening" in line:
            break
    else:
        raise RuntimeError("raw-server did not start")
    return p


def server_pid(p, strace):
    if not strace:
        return p.pid
    # strace's child.
    kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
    return int(kids[0])


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


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
        head = {k: v for k, v in re.findall(r"^(SqEntries|CqEntries|SqHead|CqHead):\s*(\d+)",
                                             text, re.M)}
        out.append({"fd": int(fd), "pending_by_op": {OPS.get(k, str(k)): v
                                                       for k, v in sorted(ops.items())},
                    **head, "text_head": text[:600]})
    return out


def connect_idle(sock, n, conns):
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(sock))
        s.sendall(b"x")
        conns.append(s)
    for s in conns[-n:]:
        s.settimeout(5)
        assert s.recv(1) == b"x"


def idle(engine, tmp):
    sock = Path(tmp) / f"{engine}.sock"
    p = start(engine, sock)
    conns = []
    connect_idle(sock, 1, conns)
    time.sleep(0.3)
    r0 = rss(p.pid)
    connect_idle(sock, 999, conns)
    time.sleep(0.5)
    r1 = rss(p.pid)
    info1 = rings(p.pid)
    connect_idle(sock, 4000, conns)
    time.sleep(0.5)
    r5 = rss(p.pid)
    for s in conns:
        s.close()
    p.terminate()
    p.wait(10)
    return {"rss_1": r0, "rss_1000": r1, "rss_5000": r5,
            "per_conn_1000": (r1 - r0) / 999, "per_conn_5000": (r5 - r0) / 4999,
            "rings_at_1000": info1}


def strace(engine, tmp, seconds):
    sock = Path(tmp) / f"{engine}-s.sock"
    st = Path(tmp) / f"{engine}.strace"
    p = start(engine, sock, st)
    srv = server_pid(p, True)
    js = Path(tmp) / f"{engine}.json"
    subprocess.run(["taskset", "-c", "1", str(LOADGEN), "raw-echo", "--unix", str(sock),
                    "--sessions", "100", "--depth", "16", "--size", "240", "--threads", "1",
                    "--cpus", "1", "--warmup", "0", "--duration", str(seconds), "--quiet",
                    "--json", str(js)], stdout=subprocess.DEVNULL, timeout=seconds + 60)
    # The server (strace's child) takes SIGTERM; strace then writes its summary.
    os.kill(srv, 15)
    p.wait(20)
    msgs = json.load(open(js))["results"]["messages"]
    calls = {}
    for line in open(st):
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m and m.group(2) != "total":
            calls[m.group(2)] = int(m.group(1))
    total = sum(calls.values())
    recv_send = sum(v for k, v in calls.items()
                    if re.match(r"(recv|send|read|write)(v|msg|from|to|mmsg)?$", k))
    return {"messages": msgs, "syscalls": total, "per_msg": total / max(msgs, 1),
            "recv_send_family": recv_send, "recv_send_per_msg": recv_send / max(msgs, 1),
            "top": sorted(calls.items(), key=lambda kv: -kv[1])[:6]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", default="monoio,ring")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "runtime"))
    a = ap.parse_args()
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for e in a.engines.split(","):
            res[e] = {"idle": idle(e, tmp), "strace": strace(e, tmp, a.seconds)}
            print(e, json.dumps({k: v for k, v in res[e]["idle"].items()
                                 if k != "rings_at_1000"}), file=sys.stderr)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "probe.json").write_text(json.dumps(res, indent=1))
    print("| engine | RSS/idle conn (1,000) | RSS/idle conn (5,000) | pending ops per ring "
          "at 1,000 idle | syscalls/msg (strace -c -f) | recv/send/read/write per msg |")
    print("| --- | --- | --- | --- | --- | --- |")
    for e, r in res.items():
        i, s = r["idle"], r["strace"]
        ops = "; ".join(", ".join(f"{k}×{v}" for k, v in g["pending_by_op"].items()) or "none"
                        for g in i["rings_at_1000"])
        print(f"| {e} | {i['per_conn_1000']:,.0f} B | {i['per_conn_5000']:,.0f} B | {ops} | "
              f"{s['per_msg']:.3f} | {s['recv_send_per_msg']:.4f} |")
    for e, r in res.items():
        print(f"\n{e} strace top: {r['strace']['top']} over {r['strace']['messages']} messages")


if __name__ == "__main__":
    main()
