#!/usr/bin/env bash
# A checkpoint save that fails mid-run: the trainer exits non-zero naming the path, and the step's
# metrics line says so ("checkpoint_error"), which the worker agent counts as
# dstrain_checkpoint_save_failures_total (the checkpoint alert in deploy/prometheus reads it).
# The failure is made by a file where the step's checkpoint directory must go.
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
dstrain="$ws/client/cli/dstrain"
src="$ws/tests/integration/data_parallel/job.json"
out="$TEST_TMPDIR/ckfail"
mkdir -p "$out/ckpt"
/usr/bin/python3 - "$src" "$out/job.json" "$out/ckpt" <<'PY'
import json, os, sys
src, dst, ckpt = sys.argv[1:4]
j = json.load(open(src))
j["data"]["train"] = os.path.join(os.path.dirname(os.path.abspath(src)), j["data"]["train"])
j["job"].update(train_steps=6, checkpoint_dir=ckpt, checkpoint_every=3)
json.dump(j, open(dst, "w"))
PY
touch "$out/ckpt/step_00000003"
status=0
"$dstrain" train "$out/job.json" --threads 1 --metrics-out "$out/metrics.jsonl" > "$out/log" 2>&1 ||
  status=$?
cat "$out/log"
[[ $status -ne 0 ]] || { echo "FAIL: the run succeeded although its checkpoint could not be saved"; exit 1; }
grep -q "ckpt/step_00000003" "$out/log" || { echo "FAIL: the error does not name the path"; exit 1; }
/usr/bin/python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert [l["step"] for l in lines] == [1, 2, 3], [l["step"] for l in lines]
assert all("checkpoint_error" not in l for l in lines[:2]), lines[:2]
assert "step_00000003" in lines[-1]["checkpoint_error"], lines[-1]
print("step 3 line:", lines[-1]["checkpoint_error"])
PY
echo PASS
