#!/usr/bin/env bash
# Checkpoints of pipelined jobs end to end over real Gloo processes (`dstrain launch`): one
# checkpoint per step for the whole grid, a shard per (stage, data rank) holding its stage's
# slice, meta.pipeline recording the stages' blocks.
#   - Stop and resume on the same grid (2 stages): bitwise the uninterrupted run's steps 6-10 and
#     final weights.
#   - `dstrain export` of the pipelined checkpoint: byte for byte the model the run wrote.
#   - Into other grids through resharding: the 2-stage checkpoint of step 5 resumed unsplit
#     (pipeline 2 -> 1) and as 4 stages (2 -> 4), and an unsplit run's checkpoint resumed as 4
#     stages (1 -> 4): each within the pipeline parity bounds (lib.sh's compare) of the
#     uninterrupted run it continues, the grids differing only in summation order.
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
dstrain="$ws/client/cli/dstrain"
text="$ws/deploy/local/demo/tinyshakespeare.txt"
out="$TEST_TMPDIR/pipeline_checkpoint"
mkdir -p "$out"
source "$ws/tests/integration/pipeline/lib.sh"

ckpt() {  # DIR STEPS: the keys of a run that saves every 5 steps into $out/DIR
  echo "job.checkpoint_dir=\"$out/$1\"" "job.checkpoint_every=5" "job.train_steps=$2"
}
# resumed NAME: the run picked up at step 5.
resumed() { grep -q "resumed from .* at step 5" "$out/$1.log" || { cat "$out/$1.log"; exit 1; }; }

# The 2-stage pipeline on 2 ranks: whole, and stopped at step 5 then resumed on the same grid.
job p2_whole 2 2 $(ckpt ck_p2_whole 10)
job p2_first 2 2 $(ckpt ck_p2 5)
job p2_rest 2 2 $(ckpt ck_p2 10)
run p2_whole 2 10
run p2_first 2 5
cp -r "$out/ck_p2" "$out/ck_p2_step5"  # before the rest adds step 10
run p2_rest 2 10
resumed p2_rest
cmp "$out/p2_whole.bin" "$out/p2_rest.bin"
/usr/bin/python3 - "$out/p2_whole.jsonl" "$out/p2_rest.jsonl" <<'PY'
import json, sys
whole, rest = ([json.loads(l) for l in open(f)] for f in sys.argv[1:3])
assert [r["step"] for r in rest] == list(range(6, 11)), [r["step"] for r in rest]
for a, b in zip(whole[5:], rest):
    assert (a["loss"], a["grad_norm"]) == (b["loss"], b["grad_norm"]), (a, b)
print("2 stages: resumed at step 5; steps 6-10 and the final weights bitwise equal")
PY
/usr/bin/python3 - "$out/ck_p2_whole/step_00000010/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
assert m["meta"]["pipeline"] == {"stages": 2, "blocks": [[0, 2], [2, 4]]}, m["meta"]
assert sorted(s["name"] for s in m["shards"]) == ["rank_00000.bin", "rank_00001.bin"], m["shards"]
PY

# Export puts the stages' slices back together.
"$dstrain" export "$out/ck_p2_whole" --out "$out/p2_export.bin" > "$out/export.log"
cmp "$out/p2_whole.bin" "$out/p2_export.bin"
echo "export of the 2-stage checkpoint: byte for byte the run's model"

# Pipeline 2 -> 1 and 2 -> 4: step 5 of the 2-stage run resumed on other grids.
cp -r "$out/ck_p2_step5" "$out/ck_to1"
cp -r "$out/ck_p2_step5" "$out/ck_to4"
job to1 1 1 $(ckpt ck_to1 10)
job to4 4 4 $(ckpt ck_to4 10) 'pipeline.partition="uniform"'
run to1 1 10
resumed to1
compare p2_whole to1
run to4 4 10
resumed to4
compare p2_whole to4

# Pipeline 1 -> 4: an unsplit run's checkpoint resumed as 4 stages.
job u_whole 1 1 "job.train_steps=10"
job u_first 1 1 $(ckpt ck_u 5)
job u_to4 4 4 $(ckpt ck_u 10) 'pipeline.partition="uniform"'
run u_whole 1 10
run u_first 1 5
run u_to4 4 10
resumed u_to4
compare u_whole u_to4
echo "pipeline checkpoints: all checks passed"
