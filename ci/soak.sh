#!/usr/bin/env bash
# Soak test (run by hand, not in CI): a release sockchat-server under mixed load for
# SOAK_MINUTES (default 20), sampling its RSS and open-fd count once a minute, then a
# verdict (flat or not) written to bench-results/soak.md.
#
#   ci/soak.sh                      20 minutes
#   SOAK_MINUTES=3 ci/soak.sh       a short run (e.g. to try the script)
#
# Load, all at once on loopback TCP and a Unix socket in a temp dir:
#   - echo:      `loadgen rate` (open loop, paced) over Unix, small and mixed sizes
#   - heartbeat: `loadgen heartbeat` over TCP, many mostly idle sessions
#   - churn:     `loadgen churn --verify` in bursts (connect, handshake, ping, close)
#   - chunked:   `loadgen echo --chunked` in bursts (multi-MiB messages as 1 MiB chunks)
#   - hostile:   a small python3 loop of bad clients (garbage, slowloris, RST mid-frame,
#                no ack, wrong HMAC, oversize announcement then silence)
# Each load generator exits 2 on any protocol error; the script records their statuses.
#
# Environment: SOAK_MINUTES, SOAK_OUT (default bench-results/soak.md), SOAK_CSV (default
# bench-results/soak.csv), SOAK_COMMIT (the commit the binaries were built from, for the
# report; default HEAD), SOAK_SKIP_BUILD=1 (use the binaries already built),
# CARGO_TARGET_DIR (where to find/build them), SOAK_FLAT_RSS_KIB (default 4096: most RSS
# by which the second half of the run may exceed the first half's highest RSS and still
# count as flat), SOAK_FLAT_FD (default 64: same for open fds, which move with the churn).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

minutes=${SOAK_MINUTES:-20}
out=${SOAK_OUT:-bench-results/soak.md}
csv=${SOAK_CSV:-bench-results/soak.csv}
flat_rss_kib=${SOAK_FLAT_RSS_KIB:-4096}
flat_fd=${SOAK_FLAT_FD:-64}
secs=$((minutes * 60))

if [ "${SOAK_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked -q -p sockchat-server -p loadgen
fi
target_dir=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}
server_bin="$target_dir/release/sockchat-server"
loadgen_bin="$target_dir/release/loadgen"
[ -x "$server_bin" ] && [ -x "$loadgen_bin" ] || { echo "missing $server_bin or $loadgen_bin"; exit 1; }

work=$(mktemp -d /tmp/sockchat-soak.XXXXXX)
sock="$work/soak.sock"
pids=()
server_pid=""
cleanup() {
  # Only the processes this script started, by PID.
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
}
trap cleanup EXIT

# --- server -----------------------------------------------------------------------------
RUST_LOG=info "$server_bin" --tcp 127.0.0.1:0 --unix "$sock" --log-format json \
  --stats-interval 60s --session-timeout 10s --handshake-timeout 5s \
  >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
for _ in $(seq 1 200); do grep -q '^ready$' "$work/server.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready$' "$work/server.out" || { echo "server did not start"; cat "$work/server.err"; exit 1; }
tcp=$(sed -n 's/^listening tcp //p' "$work/server.out" | head -1)
echo "server pid $server_pid on tcp $tcp and unix $sock; soak for $minutes min; work dir $work"

# --- the hostile clients ------------------------------------------------------------------
cat >"$work/hostile.py" <<'PY'
import hmac, hashlib, json, os, random, socket, struct, sys, time, zlib
tcp_host, tcp_port = sys.argv[1].rsplit(":", 1)
unix_path, until = sys.argv[2], time.time() + float(sys.argv[3])
KEY = b"default-key"
MAGIC = bytes([0x89, 0x50, 0x4E, 0x47, 0x0E, 0x0B, 0x1B, 0x0B])
counts = {}

def frame(kind, sid, content, key=KEY, content_len=None):
    h = json.dumps({"type": kind, "content_type": "application/octet-stream", "session_id": sid}).encode()
    mac = hmac.new(key, h + content, hashlib.sha256).digest()
    n = len(content) if content_len is None else content_len
    return struct.pack("!8sHHIIQI32s", MAGIC, 1, 0, len(h), zlib.crc32(h), n, zlib.crc32(content), mac) + h + content

def connect():
    if random.random() < 0.5:
        s = socket.create_connection((tcp_host, int(tcp_port)), timeout=5)
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(5); s.connect(unix_path)
    return s

def read_init(s):
    buf = b""
    while len(buf) < 64:
        d = s.recv(4096)
        if not d: raise EOFError
        buf += d
    hl = struct.unpack("!I", buf[12:16])[0]; cl = struct.unpack("!Q", buf[20:28])[0]
    while len(buf) < 64 + hl + cl:
        d = s.recv(4096)
        if not d: raise EOFError
        buf += d
    return json.loads(buf[64:64 + hl])["session_id"]

def drain(s, secs):
    s.settimeout(secs)
    try:
        while s.recv(65536): pass
    except OSError:
        pass

def garbage():
    s = connect(); s.sendall(os.urandom(200)); drain(s, 3); s.close()

def slowloris():
    s = connect(); sid = read_init(s); s.sendall(frame("session_ack", sid, b"Session acknowledged"))
    f = frame("message", sid, b"x" * 100)
    for b in f[:30]:
        s.send(bytes([b])); time.sleep(0.1)
    s.close()

def rst_mid_frame():
    s = connect(); sid = read_init(s); s.sendall(frame("session_ack", sid, b"Session acknowledged"))
    f = frame("message", sid, os.urandom(50000)); s.sendall(f[: len(f) // 2])
    if s.family == socket.AF_INET:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()

def no_ack():
    s = connect(); read_init(s); s.close()

def wrong_hmac():
    s = connect(); sid = read_init(s); s.sendall(frame("session_ack", sid, b"Session acknowledged"))
    s.sendall(frame("message", sid, b"forged", key=b"wrong-key")); drain(s, 3); s.close()

def big_then_silence():
    s = connect(); sid = read_init(s); s.sendall(frame("session_ack", sid, b"Session acknowledged"))
    f = frame("message", sid, b"y" * 1000, content_len=10 * 1024 * 1024)
    s.sendall(f[:64]); time.sleep(2); s.close()

cases = [garbage, slowloris, rst_mid_frame, no_ack, wrong_hmac, big_then_silence]
while time.time() < until:
    c = random.choice(cases)
    try:
        c(); counts[c.__name__] = counts.get(c.__name__, 0) + 1
    except Exception as e:
        counts["exception_" + type(e).__name__] = counts.get("exception_" + type(e).__name__, 0) + 1
    time.sleep(0.2)
print(json.dumps(counts, sort_keys=True))
PY

# --- load -------------------------------------------------------------------------------
lg() { "$loadgen_bin" "$@" --quiet --warmup 1 --drain 3; }
echo_log="$work/echo.log"; hb_log="$work/heartbeat.log"; churn_log="$work/churn.log"
chunk_log="$work/chunked.log"; hostile_log="$work/hostile.log"
load_secs=$((secs + 10))   # ends just after the last sample; the script waits for it
"$loadgen_bin" rate --quiet --warmup 1 --drain 3 --unix "$sock" --sessions 200 --rate 2000 --size 256 --threads 1 --duration "$load_secs" \
  >"$echo_log" 2>&1 &
echo_pid=$!; pids+=($echo_pid)
"$loadgen_bin" heartbeat --quiet --warmup 1 --drain 3 --tcp "$tcp" --sessions 2000 --interval 1 --threads 1 --duration "$load_secs" \
  >"$hb_log" 2>&1 &
hb_pid=$!; pids+=($hb_pid)
# Bursts: 10 s of churn / chunked echo every 30 s, until the window ends.
# The loops start no burst in the last 45 s, so every burst ends before the server stops.
( end=$((SECONDS + secs - 45)); while [ $SECONDS -lt $end ]; do
    lg churn --tcp "$tcp" --sessions 4 --verify --threads 1 --duration 10 >>"$churn_log" 2>&1; echo "exit $?" >>"$churn_log"
    sleep 20; done ) &
pids+=($!)
( sleep 15; end=$((SECONDS + secs - 60)); while [ $SECONDS -lt $end ]; do
    lg echo --unix "$sock" --sessions 2 --depth 1 --size-dist 65536:50,3145728:50 --chunked \
      --chunk-size 1048576 --threads 1 --duration 10 >>"$chunk_log" 2>&1; echo "exit $?" >>"$chunk_log"
    sleep 20; done ) &
pids+=($!)
python3 "$work/hostile.py" "$tcp" "$sock" "$secs" >"$hostile_log" 2>&1 &
pids+=($!)

# --- sampling -----------------------------------------------------------------------------
sample() {
  local rss hwm fds threads
  rss=$(awk '/^VmRSS:/{print $2}' "/proc/$server_pid/status")
  hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$server_pid/status")
  threads=$(awk '/^Threads:/{print $2}' "/proc/$server_pid/status")
  fds=$(ls "/proc/$server_pid/fd" | wc -l)
  echo "$1,$(date -u +%H:%M:%S),$rss,$hwm,$fds,$threads"
}
mkdir -p "$(dirname "$csv")"
echo "minute,time_utc,rss_kib,hwm_kib,open_fds,threads" >"$csv"
start=$SECONDS
sample 0 >>"$csv"
for m in $(seq 1 "$minutes"); do
  while [ $((SECONDS - start)) -lt $((m * 60)) ]; do sleep 1; done
  kill -0 "$server_pid" 2>/dev/null || { echo "server died at minute $m"; break; }
  sample "$m" | tee -a "$csv"
done

# --- stop -----------------------------------------------------------------------------------
# Every load generator ends by itself (durations above); wait for them (bounded), so their
# summaries are complete and no session is cut by the shutdown.
# Each one ends by itself (durations above): wait for every one, so their summaries are
# complete and no session is cut by the shutdown.
st=0; wait "$echo_pid" || st=$?; echo "exit $st" >>"$echo_log"
st=0; wait "$hb_pid" || st=$?; echo "exit $st" >>"$hb_log"
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()
t0=$SECONDS
kill -TERM "$server_pid"
server_status=0
wait "$server_pid" || server_status=$?
stop_secs=$((SECONDS - t0))
server_pid=""
socket_left=no; [ -e "$sock" ] && socket_left=yes

# --- report -------------------------------------------------------------------------------
machine="$(nproc) vCPU, $(awk '/MemTotal/{printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), $(uname -sr), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
python3 - "$csv" "$out" "$minutes" "$flat_rss_kib" "$flat_fd" "$server_status" "$stop_secs" "$socket_left" \
  "$machine" "${SOAK_COMMIT:-$(git rev-parse --short HEAD)}" "$work" <<'PY'
import csv, json, os, sys
csv_path, out, minutes, flat_rss, flat_fd, status, stop_secs, socket_left, machine, commit, work = sys.argv[1:12]
rows = list(csv.DictReader(open(csv_path)))
def tail(name, n=6):
    try:
        lines = open(os.path.join(work, name)).read().strip().splitlines()
    except OSError:
        return "(no output)"
    return "\n".join(lines[-n:])
def exits(name):
    try:
        return [l for l in open(os.path.join(work, name)).read().splitlines() if l.startswith("exit ")]
    except OSError:
        return []
# The first minute is warm-up (sessions being established, pools filling): compare
# minute 1 with the last minute.
base = rows[1] if len(rows) > 2 else rows[0]
last = rows[-1]
d_rss = int(last["rss_kib"]) - int(base["rss_kib"])
d_fd = int(last["open_fds"]) - int(base["open_fds"])
loaded = rows[1:] or rows
rss_vals = [int(r["rss_kib"]) for r in loaded]
fd_vals = [int(r["open_fds"]) for r in loaded]
# RSS moves in steps of the chunked messages' multi-MiB buffers, so endpoints are noise:
# flat means no upward trend, i.e. the second half of the run sets no new high beyond the
# first half's by more than the tolerance (RSS and open fds).
half = max(1, len(loaded) // 2)
first_max_rss, second_max_rss = max(rss_vals[:half]), max(rss_vals[half:] or rss_vals)
first_max_fd, second_max_fd = max(fd_vals[:half]), max(fd_vals[half:] or fd_vals)
flat = (second_max_rss - first_max_rss <= int(flat_rss)
        and second_max_fd - first_max_fd <= int(flat_fd))
# Last server stats line and shutdown totals from the JSON log.
stopped = stats = None
try:
    for line in open(os.path.join(work, "server.err")):
        try:
            v = json.loads(line)
        except ValueError:
            continue
        msg = v.get("fields", {}).get("message")
        if msg == "stats":
            stats = v["fields"]
        elif msg == "server stopped":
            stopped = v["fields"].get("totals")
except OSError:
    pass
all_exits = {n: exits(n) for n in ["echo.log", "heartbeat.log", "churn.log", "chunked.log"]}
bad = {n: [e for e in x if e != "exit 0"] for n, x in all_exits.items()}
with open(out, "w") as f:
    f.write("# Soak: sockchat-server under mixed load\n\n")
    f.write(f"Verdict: **{'flat' if flat else 'NOT flat'}**. RSS minute 1 → {len(rows)-1}: "
            f"{int(base['rss_kib'])} → {int(last['rss_kib'])} KiB ({d_rss:+d} KiB; min {min(rss_vals)}, max {max(rss_vals)}); "
            f"open fds {base['open_fds']} → {last['open_fds']} ({d_fd:+d}). "
            f"Highest RSS in the first / second half of the run: {first_max_rss} / {second_max_rss} KiB; "
            f"highest open fds: {first_max_fd} / {second_max_fd}. Flat means the second half sets no new high "
            f"beyond the first half's by more than {flat_rss} KiB of RSS or {flat_fd} fds (minute 0 is before the load).\n\n")
    import datetime
    f.write(f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC (end). "
            f"Duration: {minutes} min (`SOAK_MINUTES={minutes} ci/soak.sh`), binaries built from commit {commit}.\n")
    f.write(f"- Machine: {machine}; a **shared** VM (other builds and benchmarks ran at the same time), "
            "so throughput figures here mean nothing; only the memory and fd trend does.\n")
    f.write(f"- Server: release build, 2 cores (default), `--log-format json --stats-interval 60s "
            "--session-timeout 10s --handshake-timeout 5s`, TCP 127.0.0.1 and a Unix socket.\n")
    f.write(f"- Shutdown at the end: SIGTERM → exit status {status} in {stop_secs} s; socket file left behind: {socket_left}.\n\n")
    f.write("Load (all at once):\n\n```\n"
            "loadgen rate      --unix S --sessions 200 --rate 2000 --size 256 --threads 1 --duration D\n"
            "loadgen heartbeat --tcp A --sessions 2000 --interval 1 --threads 1 --duration D\n"
            "loadgen churn     --tcp A --sessions 4 --verify --threads 1 --duration 10          # every 30 s\n"
            "loadgen echo      --unix S --sessions 2 --depth 1 --size-dist 65536:50,3145728:50 \\\n"
            "                  --chunked --chunk-size 1048576 --threads 1 --duration 10       # every 30 s\n"
            "python3 hostile.py   # garbage, slowloris, RST mid-frame, no ack, wrong HMAC, 10 MiB announced then silence\n"
            "```\n\n")
    f.write("| minute | time (UTC) | RSS KiB | VmHWM KiB | open fds | threads |\n|---:|---|---:|---:|---:|---:|\n")
    for r in rows:
        f.write(f"| {r['minute']} | {r['time_utc']} | {r['rss_kib']} | {r['hwm_kib']} | {r['open_fds']} | {r['threads']} |\n")
    f.write("\nLoad generator exit statuses (any `exit 2` means protocol errors were seen):\n\n")
    for n, x in all_exits.items():
        f.write(f"- {n[:-4]}: {len(x)} runs, {len(bad[n])} not zero {bad[n][:3] if bad[n] else ''}\n")
    f.write(f"\nHostile clients run (by case): `{tail('hostile.log', 1)}`\n\n")
    if stats:
        f.write(f"Last stats line: sessions={stats.get('sessions')} msgs_in/s={stats.get('msgs_in_per_s')} "
                f"closes in the last minute: `{stats.get('closes')}`\n\n")
    if stopped:
        f.write(f"Shutdown totals: `{stopped}`\n\n")
    f.write("Summaries (last lines of each generator's output):\n\n")
    for n in ["echo.log", "heartbeat.log", "churn.log", "chunked.log"]:
        f.write(f"{n[:-4]}:\n```\n{tail(n)}\n```\n")
print(open(out).read())
PY
rm -rf "$work"
