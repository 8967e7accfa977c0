#!/usr/bin/env bash
# Noise-free regression gate: instructions executed by the codec hot paths, counted by
# callgrind (the same binary and input give the same count, however busy the machine is).
#
#   ci/instructions.sh            compare with bench-results/baseline-instructions.json,
#                                 fail if any case grew by more than 3%
#   ci/instructions.sh --update   re-baseline on purpose (commit the JSON with a reason)
#
# Under valgrind, CPUID hides SHA-NI, so SHA-256 takes its portable path on every host: the
# counts do not depend on the machine's CPU, only on the code and the toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

baseline=bench-results/baseline-instructions.json
threshold_pct=3
mode=${1:-compare}

if ! command -v valgrind >/dev/null 2>&1; then
  echo "valgrind not found; installing it"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq valgrind >/dev/null
fi

cargo build --release --locked -q -p sockchat-proto --example hotpaths
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release/examples/hotpaths"

results=$(mktemp)
trap 'rm -f "$results" "$results".cg' EXIT
for case in $("$bin" --list); do
  valgrind --tool=callgrind --callgrind-out-file="$results.cg" --toggle-collect='hotpaths::measure*' \
    "$bin" "$case" >/dev/null 2>"$results.log" || { cat "$results.log"; exit 1; }
  count=$(sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$results.log")
  [ -n "$count" ] || { echo "no count for $case"; cat "$results.log"; exit 1; }
  echo "$case $count" >>"$results"
done
rm -f "$results.log"

python3 - "$results" "$baseline" "$mode" "$threshold_pct" "$(rustc --version)" <<'PY'
import json, sys
results_path, baseline_path, mode, threshold, rustc = sys.argv[1:6]
threshold = float(threshold)
current = {}
for line in open(results_path):
    name, count = line.split()
    current[name] = int(count)
if mode == "--update":
    json.dump({"about": "callgrind instruction counts of proto/examples/hotpaths.rs (ci/instructions.sh)",
               "rustc": rustc, "counts": current}, open(baseline_path, "w"), indent=2)
    open(baseline_path, "a").write("\n")
    for name, count in current.items():
        print(f"{name:28} {count:>14,}")
    print(f"baseline written to {baseline_path}")
    sys.exit(0)
base = json.load(open(baseline_path))
if base.get("rustc") != rustc:
    print(f"note: baseline made with {base.get('rustc')}, this is {rustc}; counts may shift with the compiler")
failed = []
print(f"{'case':28} {'baseline':>14} {'now':>14} {'change':>8}")
for name, count in current.items():
    old = base["counts"].get(name)
    if old is None:
        print(f"{name:28} {'(new)':>14} {count:>14,}")
        continue
    pct = (count - old) * 100.0 / old
    flag = "  FAIL" if pct > threshold else ""
    print(f"{name:28} {old:>14,} {count:>14,} {pct:>+7.2f}%{flag}")
    if pct > threshold:
        failed.append(name)
if failed:
    print(f"\ninstruction count grew more than {threshold}% in: {', '.join(failed)}")
    print("If the growth is intended, re-baseline with `ci/instructions.sh --update` and say why in the commit.")
    sys.exit(1)
print(f"\nall cases within +{threshold}% of the baseline")
PY
