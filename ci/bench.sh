#!/usr/bin/env bash
# Load benchmark suite: sockchat-server against loadgen, with each case's baseline measured
# in the same run (see bench-results/README.md for the latest report).
#
#   ci/bench.sh                    full suite (~6 min of runs on 2 vCPUs): every case 3 runs
#                                  interleaved with its baseline; writes
#                                  bench-results/<date>-<commit>.json, charts, and
#                                  regenerates bench-results/README.md
#   ci/bench.sh --quick            CI check (~80 s after the build): echo 64 B depth 16
#                                  TCP+Unix and churn TCP+Unix vs the raw server, a small
#                                  heartbeat; 3 short runs each; ratios compared with
#                                  bench-results/baseline.json by `loadgen compare`; fails
#                                  only when a ratio is more than 30% worse
#   ci/bench.sh --quick --update-baseline
#                                  re-baseline (5 runs each); commit the JSON with a reason
#   BASE_REV=<rev> ci/bench.sh     also builds sockchat-server at <rev> (git archive into a
#                                  temp dir) and runs it interleaved as a second baseline
#   other options: --runs N --duration S --warmup S --server-cpu N --loadgen-cpu N
#                  --only case1,case2 --keep DIR --max-regression PCT   (ci/bench.py --help)
#
# Needs two CPUs: the server is pinned to --server-cpu (0), loadgen to --loadgen-cpu (1).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
for arg in "$@"; do
  [ "$arg" = --quick ] && quick=1
done

export CARGO_TERM_COLOR=never
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

echo "building release binaries (sockchat-server, loadgen) in $target_dir"
cargo build --release --locked -q -p sockchat-server -p loadgen
if [ "$quick" = 0 ]; then
  # The 1 MiB echo cases' baseline: single-core HMAC-SHA256 throughput.
  cargo build --release --locked -q -p sockchat-proto --example hmac_throughput
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

python3 ci/bench.py --bin-dir "$target_dir/release" "${base_args[@]}" "$@"
