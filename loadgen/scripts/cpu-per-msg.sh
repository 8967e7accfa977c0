#!/usr/bin/env bash
# CPU time per message, loadgen vs sockchat-server, in a pinned echo run:
# server `--cores 1` on CPU 0 (taskset -c 0), loadgen `--threads 1 --cpus 1`.
# Usage: cpu-per-msg.sh TRANSPORT(tcp|unix) DEPTH [DURATION_S] [SESSIONS] [RUNS]
# Prints one line per run: loadgen ns/msg, server ns/msg, ratio, msg/s, load average.
# Env: BIN_DIR (default $CARGO_TARGET_DIR/release or target/release).
set -euo pipefail
transport=${1:?tcp|unix}; depth=${2:?depth}; dur=${3:-10}; sessions=${4:-100}; runs=${5:-3}
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for run in $(seq 1 "$runs"); do
  taskset -c 0 "$bin/sockchat-server" --tcp 127.0.0.1:0 --unix "$dir/s.sock" --cores 1 \
    >"$dir/out" 2>"$dir/err" &
  pid=$!
  for _ in $(seq 1 200); do grep -q '^ready' "$dir/out" 2>/dev/null && break; sleep 0.05; done
  port=$(sed -n 's/^listening tcp 127.0.0.1:\([0-9]*\)$/\1/p' "$dir/out")
  if [ "$transport" = tcp ]; then tgt=(--tcp "127.0.0.1:$port"); else tgt=(--unix "$dir/s.sock"); fi
  load=$(cut -d' ' -f1 /proc/loadavg)
  "$bin/loadgen" echo "${tgt[@]}" --sessions "$sessions" --depth "$depth" --size 64 \
    --threads 1 --cpus 1 ${LOADGEN_ARGS:-} --warmup 1 --duration "$dur" --server-pid "$pid" --quiet \
    --json "$dir/r.json" >/dev/null || echo "run $run: loadgen exit $?" >&2
  kill -TERM "$pid"; wait "$pid" || true
  if grep -q '"errors_total": [1-9]' "$dir/r.json"; then cp "$dir/r.json" "/tmp/cpu-per-msg-fail-$$-$run.json"; fi
  python3 - "$dir/r.json" "$transport" "$depth" "$run" "$load" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); c = r["cpu"]; x = r["results"]
lg, sv = c["loadgen_cpu_ns_per_msg"], c["server_cpu_ns_per_msg"]
print(f"{sys.argv[2]} depth {sys.argv[3]} run {sys.argv[4]}: loadgen {lg:.0f} ns/msg "
      f"(user {c['loadgen_user_s']:.2f} s sys {c['loadgen_sys_s']:.2f} s)  server {sv:.0f} ns/msg "
      f"(user {c['server_user_s']:.2f} s sys {c['server_sys_s']:.2f} s)  ratio {lg/sv:.2f}  "
      f"{x['messages_per_sec']:.0f} msg/s  errors {x['errors_total']} {x['errors'] or ''}  load {sys.argv[5]}")
PY
done
