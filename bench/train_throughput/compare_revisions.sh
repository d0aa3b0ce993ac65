#!/usr/bin/env bash
# Training throughput of another revision against this tree, side by side in one run: builds
# dstrain_bench at REV in a temporary git worktree and here, then runs the two alternately on
# train_throughput.sh's configs (a) and (b), ROUNDS times each, and prints the medians and their
# ratio (this tree / REV). For "the change kept the speed": noise hits both builds alike.
# Usage: bench/train_throughput/compare_revisions.sh REV [ROUNDS] (default 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=${1:?usage: compare_revisions.sh REV [ROUNDS]}
rounds=${2:-5}
cores=$(nproc)
source tools/bazel_flags.sh
work=$(mktemp -d)
trap 'git worktree remove --force "$work/tree" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/tree" "$rev" >/dev/null
(cd "$work/tree" && bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //bench/train_throughput:dstrain_bench >&2 &&
  cp "$(bazel info "${DSTRAIN_BAZEL_CONFIG[@]}" bazel-bin 2>/dev/null)/bench/train_throughput/dstrain_bench" "$work/before" &&
  bazel shutdown >/dev/null 2>&1)
bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //bench/train_throughput:dstrain_bench >&2
after="$(bazel info "${DSTRAIN_BAZEL_CONFIG[@]}" bazel-bin 2>/dev/null)/bench/train_throughput/dstrain_bench"

tokens() {  # BINARY STEPS FLAGS...
  local bin=$1 steps=$2
  shift 2
  "$bin" "$@" --steps "$steps" --threads "$cores" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])'
}
echo "dstrain_bench at $rev against this tree ($(git rev-parse --short HEAD)), tokens/s, $rounds alternating rounds, $cores cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
for cfg in a b; do
  if [[ $cfg == a ]]; then
    flags=(--layers 4 --embd 256 --heads 4 --vocab 8192 --seq 256 --batch 8)
    steps=8
  else
    flags=(--layers 12 --embd 768 --heads 12 --vocab 50257 --seq 64 --batch 4 --max-seq 1024)
    steps=4
  fi
  before=()
  now=()
  for ((r = 0; r < rounds; r++)); do
    before+=("$(tokens "$work/before" "$steps" "${flags[@]}")")
    now+=("$(tokens "$after" "$steps" "${flags[@]}")")
  done
  python3 - "$cfg" "${before[*]}" "${now[*]}" <<'PY'
import statistics, sys
cfg, a, b = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
ma, mb = statistics.median(a), statistics.median(b)
print(f"({cfg}) before {ma:,.0f}, after {mb:,.0f}: {mb / ma:.3f}x "
      f"(rounds before {' '.join(f'{x:.0f}' for x in a)}; after {' '.join(f'{x:.0f}' for x in b)})")
PY
done
