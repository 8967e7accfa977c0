#!/usr/bin/env bash
# Load benchmark suite: sockchat-server against loadgen, with each case's baseline measured
# in the same run (see bench-results/README.md for the latest report).
#
#   ci/bench.sh                    full suite (~6 min of runs on 2 vCPUs): every case 3 runs
#                                  interleaved with its baseline; writes
#                                  bench-results/<date>-<commit>.json, charts, and
#                                  regenerates bench-results/README.md
#   ci/bench.sh --quick            CI check (~4 min after the build): echo 64 B depth 16
#                                  TCP+Unix vs the raw server with 64 B and with
#                                  frame-length payloads, echo depth 1 50 sessions vs
#                                  frame-length raw, churn TCP+Unix, a small heartbeat;
#                                  5 short runs each, in rounds (one run of every case per
#                                  round); ratios compared with this machine's baseline,
#                                  bench-results/baselines/<cpu model>.json, else
#                                  bench-results/baseline.json (`loadgen compare` on ratio
#                                  files); a case more than 30% worse (on a quiet machine)
#                                  is run 4 more times after the others and fails when all
#                                  its runs together are still more than 30% worse; any
#                                  error fails (bench-results/quick-check.md: why)
#   ci/bench.sh --quick --update-baseline
#                                  re-baseline (6 rounds of the cases with a baseline side,
#                                  ~4.5 min); commit the JSON with a reason
#   BASE_REV=<rev> ci/bench.sh     also builds sockchat-server at <rev> (git archive into a
#                                  temp dir) and runs it interleaved as a second baseline
#   ci/bench.sh --runtime --only runtime-compio-defer-d16-tcp,...
#                                  the raw echo servers' engines side by side (cases
#                                  runtime-*); writes bench-results/runtime/<date>-<commit>-<hhmmss>.json
#   ci/bench.sh --render-only bench-results/<run>.json
#                                  regenerates bench-results/README.md from a run's JSON
#   other options: --runs N --duration S --warmup S --server-cpu N --loadgen-cpu N
#                  --only case1,case2 --keep DIR --max-regression PCT --busy-threshold PCT
#                  (loadgen bench --help)
#
# The cases, their baselines and targets, and what --quick runs: ci/bench-suite.toml.
# Needs two CPUs: the server is pinned to --server-cpu (0), loadgen to --loadgen-cpu (1).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
render=0
for arg in "$@"; do
  [ "$arg" = --quick ] && quick=1
  [ "$arg" = --render-only ] && render=1
done

export CARGO_TERM_COLOR=never
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

echo "building release binaries (sockchat-server, loadgen) in $target_dir"
cargo build --release --locked -q -p sockchat-server -p loadgen
if [ "$quick" = 0 ] && [ "$render" = 0 ]; then
  # The 1 MiB echo cases' baseline: single-core HMAC-SHA256 throughput; the room
  # fan-out's: one HMAC per delivery.
  cargo build --release --locked -q -p sockchat-proto --example hmac_throughput
  cargo build --release --locked -q -p sockchat-server --example hmac_floor
fi

base_args=()
if [ -n "${BASE_REV:-}" ]; then
  rev=$(git rev-parse --short "$BASE_REV")
  src=$(mktemp -d /tmp/sockchat-bench-base.XXXXXX)
  trap 'rm -rf "$src"' EXIT
  echo "building sockchat-server at $rev (second baseline) in $target_dir/bench-base"
  git archive "$rev" | tar -x -C "$src"
  (cd "$src" && CARGO_TARGET_DIR="$target_dir/bench-base" cargo build --release --locked -q -p sockchat-server)
  base_args=(--base-server "$target_dir/bench-base/release/sockchat-server" --base-rev "$rev")
fi

"$target_dir/release/loadgen" bench --bin-dir "$target_dir/release" "${base_args[@]}" "$@"
