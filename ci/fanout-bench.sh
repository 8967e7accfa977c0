#!/usr/bin/env bash
# Fan-out figures for chat rooms on one core: one room (the lobby) of MEMBERS sessions,
# one sender at RATE messages/s, server pinned to CPU 0, loadgen to CPU 1. Prints the
# loadgen summary (p99 send -> last delivery, server CPU) and, from the same quiet window,
# the one-HMAC floor per delivery. Run inside /work/tools/quiet-run on this machine:
#   cargo build --release -p sockchat-server -p loadgen --example hmac_floor
#   /work/tools/quiet-run ci/fanout-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS=${MEMBERS:-1000}
RATE=${RATE:-200}
DURATION=${DURATION:-10}
SIZE=${SIZE:-64}
bin=target/release
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
taskset -c 0 "$bin/sockchat-server" --cores 1 --mode chat --unix "$dir/s.sock" \
    --tcp 127.0.0.1:0 >"$dir/server.out" 2>"$dir/server.err" &
pid=$!
for _ in $(seq 1 200); do grep -q '^ready' "$dir/server.out" && break; sleep 0.05; done
grep -q '^ready' "$dir/server.out"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
taskset -c 1 "$bin/loadgen" fanout --unix "$dir/s.sock" --sessions $((MEMBERS + 1)) \
    --threads 1 --rate "$RATE" --size "$SIZE" --duration "$DURATION" --warmup 2 \
    --server-pid "$pid" --json "$dir/fanout.json"
kill "$pid"; wait "$pid" || true
python3 - "$dir/fanout.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(json.dumps({k: d[k] for k in d if k not in ("hists", "timeline", "config")}, indent=1)[:3000])
PY
taskset -c 0 "$bin/examples/hmac_floor" "$SIZE"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
