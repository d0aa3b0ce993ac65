#!/usr/bin/env bash
# PyTorch parity: train the job with `dstrain train`, then replay it in PyTorch (parity.py).
set -euo pipefail
here="$TEST_SRCDIR/$TEST_WORKSPACE/tests/integration/torch_parity"
dstrain="$TEST_SRCDIR/$TEST_WORKSPACE/client/cli/dstrain"
text="$TEST_SRCDIR/$TEST_WORKSPACE/deploy/local/demo/tinyshakespeare.txt"
out="$TEST_TMPDIR/parity"
mkdir -p "$out"
"$dstrain" train "$here/job.json" --threads 2 --metrics-out "$out/metrics.jsonl" \
  --save-initial-model "$out/init.bin" --save-model "$out/final.bin"
/usr/bin/python3 "$here/parity.py" "$here/job.json" "$out/init.bin" "$out/final.bin" \
  "$out/metrics.jsonl" "$text"
