#!/usr/bin/env bash
# Stop and resume through checkpoints, end to end through the CLI: a run of 10 steps that saves
# every 5, then the same job with 20 steps picks up from the newest checkpoint (engine state and
# every rank's data position) and finishes. Its final weights must be byte-identical to one
# uninterrupted 20-step run, and its losses for steps 11-20 identical too. Cases: one process in
# fp32 at stage 0, and two processes (dstrain launch, Gloo) in bf16 at ZeRO stage 3.
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
dstrain="$ws/client/cli/dstrain"
src="$ws/tests/integration/data_parallel/job.json"
out="$TEST_TMPDIR/resume"
mkdir -p "$out"

make_job() {  # name steps stage precision ckpt_dir
  /usr/bin/python3 - "$src" "$out/$1.json" "$2" "$3" "$4" "$5" <<'PY'
import json, os, sys
src, dst, steps, stage, precision, ckpt = sys.argv[1:7]
j = json.load(open(src))
j["data"]["train"] = os.path.join(os.path.dirname(os.path.abspath(src)), j["data"]["train"])
j["job"]["train_steps"] = int(steps)
j["zero_optimization"] = {"stage": int(stage), "stage3_param_persistence_threshold": 100}
if precision != "fp32":
    j[precision] = {"enabled": True}
if ckpt:
    j["job"]["checkpoint_dir"] = ckpt
    j["job"]["checkpoint_every"] = 5
json.dump(j, open(dst, "w"))
PY
}

run() {  # nproc job metrics model
  if [[ $1 == 1 ]]; then
    "$dstrain" train "$2" --threads 1 --metrics-out "$3" --save-model "$4" > "$3.log"
  else
    "$dstrain" launch --nproc "$1" "$2" --comm-timeout 60 --metrics-out "$3" --save-model "$4" \
      > "$3.log"
  fi
}

for case in "1 0 fp32" "2 3 bf16"; do
  read -r nproc stage precision <<<"$case"
  name="n${nproc}_s${stage}_${precision}"
  ckpt="$out/ckpt_$name"
  make_job "${name}_whole" 20 "$stage" "$precision" ""
  make_job "${name}_first" 10 "$stage" "$precision" "$ckpt"
  make_job "${name}_rest" 20 "$stage" "$precision" "$ckpt"
  run "$nproc" "$out/${name}_whole.json" "$out/m_${name}_whole.jsonl" "$out/w_${name}_whole.bin"
  run "$nproc" "$out/${name}_first.json" "$out/m_${name}_first.jsonl" "$out/w_${name}_first.bin"
  run "$nproc" "$out/${name}_rest.json" "$out/m_${name}_rest.jsonl" "$out/w_${name}_rest.bin"
  grep -q "resumed from .* at step 10" "$out/m_${name}_rest.jsonl.log"
  cmp "$out/w_${name}_whole.bin" "$out/w_${name}_rest.bin"
  /usr/bin/python3 - "$out/m_${name}_whole.jsonl" "$out/m_${name}_rest.jsonl" "$name" <<'PY'
import json, sys
whole = [json.loads(l) for l in open(sys.argv[1])]
rest = [json.loads(l) for l in open(sys.argv[2])]
assert [r["step"] for r in rest] == list(range(11, 21)), [r["step"] for r in rest]
for a, b in zip(whole[10:], rest):
    assert a["loss"] == b["loss"] and a["grad_norm"] == b["grad_norm"], (a, b)
print(f"{sys.argv[3]}: resumed at step 10; steps 11-20 and final weights bitwise equal")
PY
  ls "$ckpt" | grep -q step_00000010
  # Export: the latest checkpoint's weights as one llm.c file, equal to what the run saved.
  "$dstrain" export "$ckpt" --out "$out/exported_$name.bin" > /dev/null
  cmp "$out/exported_$name.bin" "$out/w_${name}_rest.bin"
done
