#!/usr/bin/env bash
# PyTorch parity: train a job with `dstrain train`, then replay it in PyTorch (parity.py).
# Arguments: JOB.json (in this directory) [FIRST_UPDATE_STEP]. With the step (the first that
# changes the weights), the job is trained again, stopped after that step, for parity.py --early.
set -euo pipefail
here="$TEST_SRCDIR/$TEST_WORKSPACE/tests/integration/torch_parity"
dstrain="$TEST_SRCDIR/$TEST_WORKSPACE/client/cli/dstrain"
text="$TEST_SRCDIR/$TEST_WORKSPACE/deploy/local/demo/tinyshakespeare.txt"
job="$here/$1"
out="$TEST_TMPDIR/parity"
mkdir -p "$out"
"$dstrain" train "$job" --threads 2 --metrics-out "$out/metrics.jsonl" \
  --save-initial-model "$out/init.bin" --save-model "$out/final.bin" 2>&1 | tee "$out/train.log"
# The device line ("... | cpu (avx512, amx)") says whether attention's products ran on AMX,
# which rounds them under bf16 (kernels/attention/attention_bf16.h): the replay must follow.
amx=()
if grep -q '| cpu ([a-z0-9]*, amx)' "$out/train.log"; then amx=(--amx); fi
early=()
if [[ $# -ge 2 ]]; then
  # The same job with fewer train_steps (the schedule's length is its own key, so the steps are
  # the same ones; parity.py checks that) and an absolute data path, written to the temp dir.
  /usr/bin/python3 -c 'import json, sys
job = json.load(open(sys.argv[1]))
job["job"]["train_steps"] = int(sys.argv[2])
job["data"]["train"] = sys.argv[3]
json.dump(job, open(sys.argv[4], "w"))' "$job" "$2" "$text" "$out/early.json"
  "$dstrain" train "$out/early.json" --threads 2 --metrics-out "$out/early.jsonl" \
    --save-model "$out/early.bin"
  early=(--early "$out/early.bin" "$out/early.jsonl")
fi
/usr/bin/python3 "$here/parity.py" "$job" "$out/init.bin" "$out/final.bin" \
  "$out/metrics.jsonl" "$text" "${early[@]}" "${amx[@]}"
