#!/usr/bin/env bash
# One quiet-run window of bench-results/fanout-floor.md: at each rate, ROUNDS rounds of
#   before  sockchat-server --cores 1 --mode chat + the previous loadgen's `fanout --rooms 1`
#   after   the same server binary + this branch's loadgen (the cheaper receiver)
#   raw     `loadgen raw-server --engine ring --fanout` + `loadgen fanout --raw` with
#           payloads as long as the frame a rooms member gets for 64 B of content
# each on a fresh server pinned to CPU 0, loadgen pinned to CPU 1, 1,001 sessions (one
# sender, 1,000 receivers), Unix socket. Usage (binaries built and copied aside first):
#   /work/tools/quiet-run bench-results/fanout-floor/run.sh BIN_DIR OUT_DIR [ROUNDS]
# BIN_DIR holds sockchat-server, loadgen-before, loadgen; the JSON reports go to OUT_DIR.
set -euo pipefail
bin=$1 out=$2 rounds=${3:-3}
mkdir -p "$out"
sock=$(mktemp -u /tmp/fanout-floor.XXXXXX.sock)
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"

# start_server KIND: starts the server for KIND on CPU 0 and waits for its socket.
start_server() {
  rm -f "$sock"
  if [ "$1" = raw ]; then
    taskset -c 0 "$bin/loadgen" raw-server --unix "$sock" --engine ring --fanout --cpus 0 2>/dev/null &
  else
    taskset -c 0 "$bin/sockchat-server" --cores 1 --mode chat --unix "$sock" >/dev/null 2>&1 &
  fi
  pid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && return; sleep 0.05; done
  echo "server $1 did not start" >&2; exit 1
}

run() { # KIND RATE DURATION ROUND
  local kind=$1 rate=$2 dur=$3 n=$4 lg args
  start_server "$kind"
  case $kind in
    before) lg="$bin/loadgen-before"; args=(--rooms 1) ;;
    after) lg="$bin/loadgen"; args=(--rooms 1) ;;
    raw) lg="$bin/loadgen"; args=(--raw --size-as-delivery-of 64) ;;
  esac
  taskset -c 1 "$lg" fanout --unix "$sock" "${args[@]}" --sessions 1001 --rate "$rate" \
    --ramp 5000 --warmup 1 --duration "$dur" --threads 1 --cpus 1 --quiet \
    --server-pid "$pid" --label "$kind-$rate" --json "$out/$rate-$n-$kind.json" >/dev/null || true
  kill -TERM "$pid"; wait "$pid" || true
}

for rate_dur in 10:10 100:5; do
  rate=${rate_dur%:*} dur=${rate_dur#*:}
  for n in $(seq "$rounds"); do
    # The order rotates each round, so no kind always runs first.
    case $((n % 3)) in
      1) order="before after raw" ;;
      2) order="after raw before" ;;
      0) order="raw before after" ;;
    esac
    for kind in $order; do run "$kind" "$rate" "$dur" "$n"; done
  done
done
echo "done; load: $(cut -d' ' -f1-3 /proc/loadavg)"
