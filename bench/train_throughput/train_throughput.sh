#!/usr/bin/env bash
# Training throughput, dstrain against PyTorch 1.13 (Debian's python3-torch), fp32, forward +
# backward + AdamW, side by side in one run:
#   (a) n_layer 4, n_embd 256, n_head 4, vocab 8192, T 256, B 8
#   (b) GPT-2 124M (n_layer 12, n_embd 768, n_head 12, vocab 50257 padded to 50304), B 4, T 64
# PyTorch runs at its fastest setting here (OPENBLAS_NUM_THREADS=<cores>, torch threads 1: its GEMMs
# run in OpenBLAS's own threads). The two alternate ROUNDS times per config so machine noise hits
# both alike; each run reports its median step, and the table shows the median over rounds and the
# ratio. Usage: bench/train_throughput/train_throughput.sh [ROUNDS] (default 3).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
cores=$(nproc)
source tools/bazel_flags.sh
bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //bench/train_throughput:dstrain_bench >&2
bench=bazel-bin/bench/train_throughput/dstrain_bench

run_pair() {  # name, steps, then model flags
  local name=$1 steps=$2
  shift 2
  local ours=() theirs=()
  for ((r = 0; r < rounds; r++)); do
    ours+=("$("$bench" "$@" --steps "$steps" --threads "$cores" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])')")
    theirs+=("$(OPENBLAS_NUM_THREADS=$cores /usr/bin/python3 bench/train_throughput/torch_bench.py \
      "$@" --steps "$steps" --threads 1 \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])')")
  done
  python3 - "$name" "${ours[*]}" "${theirs[*]}" <<'PY'
import statistics, sys
name, ours, theirs = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
o, t = statistics.median(ours), statistics.median(theirs)
print(f"| {name} | {o:,.0f} | {t:,.0f} | {o / t:.2f}x | {' '.join(f'{x:.0f}' for x in ours)} | {' '.join(f'{x:.0f}' for x in theirs)} |")
PY
}

echo "fp32 training throughput, tokens/s (median of $rounds alternating rounds; $cores cores; $(date -u +%F))"
echo
echo "| config | dstrain | PyTorch 1.13 | ratio | dstrain rounds | PyTorch rounds |"
echo "|---|---|---|---|---|---|"
run_pair "(a) L4 C256 H4 V8192 T256 B8" 8 \
  --layers 4 --embd 256 --heads 4 --vocab 8192 --seq 256 --batch 8
run_pair "(b) GPT-2 124M T64 B4" 4 \
  --layers 12 --embd 768 --heads 12 --vocab 50257 --seq 64 --batch 4 --max-seq 1024
echo
echo "targets: (a) >= 1.40x, (b) >= 1.25x"
