#!/usr/bin/env bash
# Two loadgen worker processes (--shard 0/2 and 1/2) hold SESSIONS heartbeat sessions
# together against one sockchat-server --cores 2, measuring the same window
# (--start-at-ms), over TCP and then Unix; their reports are merged and rendered.
# Usage: split-heartbeat.sh OUT_DIR [SESSIONS] [DURATION_S]
# Env: BIN_DIR (default $CARGO_TARGET_DIR/release or target/release).
# Writes OUT_DIR/{tcp,unix}-w{0,1}.json, -w{0,1}.hlog, {tcp,unix}-merged.json, and the
# rendered report (README.md and charts) of both merged runs in OUT_DIR.
set -euo pipefail
out=${1:?OUT_DIR}; sessions=${2:-19900}; dur=${3:-20}
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
mkdir -p "$out"
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
for transport in tcp unix; do
  "$bin/sockchat-server" --tcp 127.0.0.1:0 --unix "$dir/s.sock" --cores 2 >"$dir/out" 2>"$dir/err" &
  server=$!
  pids=("$server")
  for _ in $(seq 1 200); do grep -q '^ready' "$dir/out" 2>/dev/null && break; sleep 0.05; done
  port=$(sed -n 's/^listening tcp 127.0.0.1:\([0-9]*\)$/\1/p' "$dir/out")
  if [ "$transport" = tcp ]; then tgt=(--tcp "127.0.0.1:$port"); else tgt=(--unix "$dir/s.sock"); fi
  # Each worker connects its half at 2,000/s (--ramp is the run's total): ~5 s, then
  # waits for the common start 12 s from now (the server drops sessions silent for 30 s).
  start=$(( $(date +%s%3N) + 12000 ))
  workers=()
  for i in 0 1; do
    "$bin/loadgen" heartbeat "${tgt[@]}" --sessions "$sessions" --interval 1 \
      --shard "$i/2" --start-at-ms "$start" --ramp 4000 --warmup 2 --duration "$dur" \
      --server-pid "$server" --label "$transport-w$i" --quiet \
      --interval-log "$out/$transport-w$i.hlog" --json "$out/$transport-w$i.json" \
      >"$dir/w$i.out" 2>&1 &
    workers+=($!)
  done
  rc=0
  for i in 0 1; do wait "${workers[$i]}" || rc=$?; sed "s/^/[$transport w$i] /" "$dir/w$i.out"; done
  kill -TERM "$server"; wait "$server" || true
  pids=()
  "$bin/loadgen" merge "$out/$transport-w0.json" "$out/$transport-w1.json" \
    --label "$transport: 2 workers x $((sessions / 2))" --json "$out/$transport-merged.json" || rc=$?
  [ "$rc" = 0 ] || echo "$transport: a worker or the merge failed (exit $rc)" >&2
done
"$bin/loadgen" report "$out/tcp-merged.json" "$out/unix-merged.json" --out "$out"
