#!/usr/bin/env bash
# Data parallelism (ZeRO stage 0) on 2 and 4 processes equals one process on the same global
# batch (train_batch_size 8: micro-batch 8, 4 and 2 per rank). The loader gives rank r of N the
# r-th slice of the same global batch, and the engine averages gradients across ranks, so only
# the order of floating-point summation differs. Tolerances (checked in compare.py): per-step
# loss relative 1e-6 (observed 1.1e-7), final weights max |diff| 2e-5 (observed 1.9e-6; Adam can
# amplify rounding differences on weights with near-zero gradients up to lr = 3e-3 per step,
# while a missing or doubled rank moves most weights by ~lr).
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
dstrain="$ws/client/cli/dstrain"
job="$ws/tests/integration/data_parallel/job.json"
out="$TEST_TMPDIR/dp"
mkdir -p "$out"
"$dstrain" train "$job" --threads 1 --metrics-out "$out/m1.jsonl" --save-model "$out/w1.bin" >/dev/null
for n in 2 4; do
  "$dstrain" launch --nproc "$n" "$job" --comm-timeout 60 --metrics-out "$out/m$n.jsonl" \
    --save-model "$out/w$n.bin" > "$out/launch$n.log"
  grep -q '^\[rank 0\] done: 20 steps' "$out/launch$n.log"
  /usr/bin/python3 "$ws/tests/integration/data_parallel/compare.py" \
    "$out/m1.jsonl" "$out/w1.bin" "$out/m$n.jsonl" "$out/w$n.bin" "$n"
done
