#!/usr/bin/env bash
# Resharding across precisions, world sizes and stages, end to end through the CLI: two processes
# (dstrain launch, Gloo) train 10 steps in bf16 at ZeRO stage 1 and checkpoint every 5 steps.
# The same checkpoint_dir then resumes
#   - in fp32 on one process at stage 0, and
#   - in fp16 on two processes at stage 3.
# Each resumed run with train_steps 10 stops right after loading, so the model it saves is what it
# loaded: byte-identical to `dstrain export` of the checkpoint (the saved fp32 master weights).
# The fp32 run then goes on to step 14 from step 11. The first run also sets
# zero_optimization.gather_16bit_weights_on_model_save: each of its checkpoints holds model.bin,
# the consolidated model, the same bytes as the export.
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
dstrain="$ws/client/cli/dstrain"
src="$ws/tests/integration/data_parallel/job.json"
out="$TEST_TMPDIR/reshard"
ckpt="$out/ckpt"
mkdir -p "$out"

make_job() {  # name steps stage precision [gather]
  /usr/bin/python3 - "$src" "$out/$1.json" "$2" "$3" "$4" "$ckpt" "${5:-}" <<'PY'
import json, os, sys
src, dst, steps, stage, precision, ckpt, gather = sys.argv[1:8]
j = json.load(open(src))
j["data"]["train"] = os.path.join(os.path.dirname(os.path.abspath(src)), j["data"]["train"])
j["job"]["train_steps"] = int(steps)
j["job"]["checkpoint_dir"] = ckpt
j["job"]["checkpoint_every"] = 5
j["zero_optimization"] = {"stage": int(stage), "stage3_param_persistence_threshold": 100}
if gather:
    j["zero_optimization"]["gather_16bit_weights_on_model_save"] = True
if precision == "fp16":
    j["fp16"] = {"enabled": True, "initial_scale_power": 8}
elif precision == "bf16":
    j["bf16"] = {"enabled": True}
json.dump(j, open(dst, "w"))
PY
}

run() {  # nproc job metrics model
  if [[ $1 == 1 ]]; then
    "$dstrain" train "$2" --threads 1 --metrics-out "$3" --save-model "$4" > "$3.log" 2>&1
  else
    "$dstrain" launch --nproc "$1" "$2" --comm-timeout 60 --metrics-out "$3" --save-model "$4" \
      > "$3.log" 2>&1
  fi
}

make_job first 10 1 bf16 gather
run 2 "$out/first.json" "$out/m_first.jsonl" "$out/w_first.bin"
ls "$ckpt" | grep -q step_00000010
grep -q '"precision": "bf16"' "$ckpt/step_00000010/manifest.json"
"$dstrain" export "$ckpt" --out "$out/exported.bin" > /dev/null
# Under bf16 the run's --save-model is the master weights too.
cmp "$out/exported.bin" "$out/w_first.bin"
cmp "$out/exported.bin" "$ckpt/step_00000010/model.bin"
grep -q '"model.bin"' "$ckpt/step_00000010/manifest.json"
test -f "$ckpt/step_00000005/model.bin"

for case in "fp32 1 0" "fp16 2 3"; do
  read -r precision nproc stage <<<"$case"
  name="${precision}_n${nproc}_s${stage}"
  make_job "$name" 10 "$stage" "$precision"
  run "$nproc" "$out/$name.json" "$out/m_$name.jsonl" "$out/w_$name.bin"
  grep -q "resumed from .* at step 10" "$out/m_$name.jsonl.log"
  cmp "$out/exported.bin" "$out/w_$name.bin"
  echo "$name: loaded the bf16 run's master weights exactly"
done

make_job fp32_on 14 0 fp32
run 1 "$out/fp32_on.json" "$out/m_fp32_on.jsonl" "$out/w_fp32_on.bin"
grep -q "resumed from .* at step 10" "$out/m_fp32_on.jsonl.log"
/usr/bin/python3 - "$out/m_fp32_on.jsonl" <<'PY'
import json, math, sys
rest = [json.loads(l) for l in open(sys.argv[1])]
assert [r["step"] for r in rest] == list(range(11, 15)), [r["step"] for r in rest]
assert all(math.isfinite(r["loss"]) for r in rest), rest
print("fp32 resumed at step 11 and trained to step 14")
PY
grep -q '"precision": "fp32"' "$ckpt/step_00000014/manifest.json"
