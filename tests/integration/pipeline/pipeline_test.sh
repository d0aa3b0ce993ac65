#!/usr/bin/env bash
# Pipeline parallelism end to end over real Gloo processes (`dstrain launch`): the same job on
# the same global batch, unsplit on 2 data-parallel ranks and pipelined as 2 stages x 2 data
# ranks and as 4 stages x 1 data rank (its unsplit twin: 1 rank), 20 steps of 4 micro-batches
# with clipping, the 2 x 2 job evaluating and sampling as its twin does (the same sample); and
# 2 x 2 with activation checkpointing, bitwise the same. Only the tied embedding's gradient is
# summed in another order (each end's part over the micro-batches, then the two), and the norm
# per stage and then over the stages (worker/pipe/executor_test.cc says why that stays within
# fp32 rounding); the bounds are that test's (lib.sh's compare). Then the refusals: each bad
# grid is an error at `validate`, naming its key, before any rank starts.
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
dstrain="$ws/client/cli/dstrain"
text="$ws/deploy/local/demo/tinyshakespeare.txt"
out="$TEST_TMPDIR/pipeline"
mkdir -p "$out"

source "$ws/tests/integration/pipeline/lib.sh"

# Evaluation (data rank 0's pipeline, the last stage's loss) and sampling (the whole model put
# together on the leader) in the 2 x 2 job, as in its unsplit twin.
evaluate=("data.val=\"$text\"" job.eval_every=10 job.eval_batches=4 job.sample_tokens=24)
job unsplit2 2 1 "${evaluate[@]}"
job pipe2x2 4 2 "${evaluate[@]}"
job unsplit1 1 1
job pipe4x1 4 4 'pipeline.partition="uniform"'
run unsplit2 2
run pipe2x2 4
# Stage 0 sends one (B, T, C) f32 activation per micro-batch: 2 x 32 x 32 x 4 bytes, 4 per step.
compare unsplit2 pipe2x2 $((2 * 32 * 32 * 4 * 4 * 20))
grep -q 'pipeline: 2 stages x 2 data-parallel ranks' "$out/pipe2x2.log"
sample() { sed -n '/^\[rank 0\] --- sample ---$/,/^\[rank 0\] ---$/p' "$out/$1.log"; }
[[ -n "$(sample pipe2x2)" && "$(sample pipe2x2)" == "$(sample unsplit2)" ]] ||
  { echo "FAIL: the samples differ:"; sample unsplit2; sample pipe2x2; exit 1; }
# Activation checkpointing recomputes each segment of blocks with the same operations on the
# same values: the same run to the bit, and less activation memory on every stage. Segments of
# 2 blocks (each stage's 2 blocks one segment), the recomputation profiled.
job pipe2x2ckpt 4 2 'pipeline.activation_checkpoint_interval=2' \
  'activation_checkpointing.profile=true' 'activation_checkpointing.synchronize_checkpoint_boundary=true'
run pipe2x2ckpt 4
cmp "$out/pipe2x2.bin" "$out/pipe2x2ckpt.bin"
# `dstrain estimate` predicts each stage's activations, with and without checkpointing: stage 0
# (the leader, whose metrics these are) must hold exactly that.
"$dstrain" estimate --json "$out/pipe2x2ckpt.json" > "$out/estimate.json"
/usr/bin/python3 - "$out/pipe2x2.jsonl" "$out/pipe2x2ckpt.jsonl" "$out/estimate.json" <<'PY'
import json, sys
plain, ckpt = ([json.loads(l) for l in open(f)] for f in sys.argv[1:3])
stage0 = json.load(open(sys.argv[3]))["stages"][0]
assert [r["loss"] for r in plain] == [r["loss"] for r in ckpt], "losses differ"
a = plain[-1]["mem_bytes"]["activations"]
b = ckpt[-1]["mem_bytes"]["activations"]
recompute = [r["recompute_s"] for r in ckpt]
print(f"stage 0 activations: {a} bytes plain, {b} checkpointed (estimate: "
      f"{stage0['activations_without_checkpointing_bytes']} and {stage0['activations_bytes']}); "
      f"recompute {sum(recompute):.3f} s")
assert b < a, (a, b)
assert (a, b) == (stage0["activations_without_checkpointing_bytes"], stage0["activations_bytes"])
assert all(t > 0 for t in recompute) and "recompute_s" not in plain[-1], recompute
PY
run unsplit1 1
run pipe4x1 4
compare unsplit1 pipe4x1 $((2 * 32 * 32 * 4 * 4 * 20))
# Every stage's figures in the leader's metrics: each stage's point-to-point bytes exact (a
# non-last stage sends an activation per micro-batch, a non-first a gradient), its activations
# as `dstrain estimate` says, its bubble a fraction.
"$dstrain" estimate --json "$out/pipe4x1.json" > "$out/estimate4.json"
/usr/bin/python3 - "$out/pipe4x1.jsonl" "$out/estimate4.json" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
estimate = json.load(open(sys.argv[2]))["stages"]
message = 2 * 32 * 32 * 4
for line in lines:
    stages = line["stages"]
    assert [s["stage"] for s in stages] == [0, 1, 2, 3], stages
    for s in stages:
        sends = (s["stage"] < 3) + (s["stage"] > 0)
        assert s["p2p_bytes_sent"] == sends * message * 4 * line["step"], (line["step"], s)
        assert s["activations_bytes"] == estimate[s["stage"]]["activations_bytes"], s
        assert 0 <= s["bubble_fraction"] < 1 and s["compute_s"] > 0, s
print("4 stages: per-stage bytes and activations exact; bubble fractions at the last step",
      [round(s["bubble_fraction"], 2) for s in lines[-1]["stages"]])
PY

# Refusals at validation, naming the key.
refuse() {  # NAME WANT WORLD STAGES [KEY=JSON...]
  local name=$1 want=$2
  shift 2
  job "$name" "$@"
  if "$dstrain" validate "$out/$name.json" > "$out/$name.out" 2>&1; then
    echo "FAIL: $name validated"; exit 1
  fi
  grep -qF "$want" "$out/$name.out" || { echo "FAIL: $name:"; cat "$out/$name.out"; exit 1; }
}
refuse not-dividing "job.pipeline_stages: must divide job.world_size" 6 4
refuse too-many-stages "pipeline.stages" 5 5
refuse regex "pipeline.partition: 'attn' matches no layer" 2 2 'pipeline.partition="type:attn"'
refuse zero2 "zero_optimization.stage: 2 with pipeline parallelism" 2 2 \
  'zero_optimization.stage=2'
echo "pipeline: all checks passed"
