#!/usr/bin/env bash
# bf16 against fp32 training throughput on the CPU, same model and batch, one run (the
# target: bf16 at least 1.5x fp32). bf16 runs every matrix product through oneDNN's bf16 matmul
# (AVX-512 BF16 where the CPU has it) with fp32 accumulation, keeps parameters and gradients in
# bf16 and fp32 master weights; fp16 (storage only: its products widen to fp32) is shown too.
# The precisions alternate ROUNDS times so machine noise hits all alike; the table shows the
# median over rounds of each run's median step. Usage: bf16_throughput.sh [ROUNDS] (default 3).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
source tools/bazel_flags.sh
bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //bench/train_throughput:dstrain_bench >&2
bench=$(bazel info "${DSTRAIN_BAZEL_CONFIG[@]}" bazel-bin 2>/dev/null)/bench/train_throughput/dstrain_bench

run_config() {  # name, steps, then model flags
  local name=$1 steps=$2
  shift 2
  local out
  out=$(mktemp)
  for ((r = 0; r < rounds; r++)); do
    for p in fp32 bf16 fp16; do
      "$bench" "$@" --steps "$steps" --precision "$p" >> "$out"
    done
  done
  python3 - "$name" "$out" <<'PY'
import json, statistics, sys
name, path = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(path)]
med = {p: statistics.median(r["tokens_per_s"] for r in rows if r["precision"] == p)
       for p in ("fp32", "bf16", "fp16")}
mem = {p: max(r["mem_peak_bytes"] for r in rows if r["precision"] == p) for p in med}
print(f"| {name} | {med['fp32']:,.0f} | {med['bf16']:,.0f} | **{med['bf16'] / med['fp32']:.2f}x** "
      f"| {med['fp16']:,.0f} ({med['fp16'] / med['fp32']:.2f}x) "
      f"| {mem['fp32'] / 1e6:.0f} / {mem['bf16'] / 1e6:.0f} MB |")
PY
  rm -f "$out"
}

echo "| config | fp32 tok/s | bf16 tok/s | bf16 / fp32 | fp16 tok/s | peak memory fp32 / bf16 |"
echo "|---|---|---|---|---|---|"
run_config "(a) L4 C256 V8192 T256 B8" 6 --layers 4 --embd 256 --heads 4 --vocab 8192 --seq 256 --batch 8
run_config "(b) GPT-2 124M T64 B4" 3 --layers 12 --embd 768 --heads 12 --vocab 50257 \
  --padded-vocab 50304 --seq 64 --batch 4 --max-seq 1024
