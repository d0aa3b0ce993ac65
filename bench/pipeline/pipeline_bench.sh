#!/usr/bin/env bash
# Pipeline parallelism on 4 processes of the CPU engine (`dstrain launch`, shared memory between
# the local ranks since 2026-12-07, DSTRAIN_SHM=0 for Gloo over loopback),
# an 8-block GPT (bench/pipeline/job.json: n_embd 256, T 128, micro-batch 4; uniform partition),
# side by side in one run for stages S = 1, 2, 4 and micro-batches per step M = 4, 8, 16:
#   1. the measured bubble fraction beside 1F1B's (S − 1) / (M + S − 1). Measured per stage from
#      the leader's per-stage metrics (docs/job-file.md, "Pipeline parallelism"): 1 − (time in
#      forward and backward passes) / (time in the schedule up to the optimizer step): each
#      stage's median over the timed steps (the first step is not timed; noise on a shared
#      machine only adds), averaged over the stages;
#   2. tokens/s against data parallelism on the same 4 ranks with the same global batch (S = 1:
#      4 data-parallel ranks, M·D/4 micro-batches each, D = 4/S);
#   3. point-to-point bytes per step against activations × micro-batches × 2 (every stage but
#      the last sends an activation per micro-batch, every stage but the first a gradient), to
#      the byte;
#   4. activation memory per stage with and without checkpointing (every block) at M = 16:
#      measured (each stage's allocator) beside `dstrain estimate`.
# The 4 processes share this machine's cores (`nproc`). With fewer than 4 cores the stages
# time-share them, and a stage waiting for the CPU looks busy while its neighbour waits for it:
# the 1F1B formula, which assumes a processor per stage, does not describe that machine. So the
# bubble is also measured with one process per stage and per core (S stages x 1 data rank, for
# every S <= nproc), and the 20% target is judged there when the machine has fewer than 4 cores.
# A stage's every micro-batch also waits twice for a message (its activation out, the gradient
# back), which the formula leaves out: a larger micro-batch makes that share smaller.
# Usage: bench/pipeline/pipeline_bench.sh [STEPS] (default 8).
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-8}
source tools/bazel_flags.sh
bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //client/cli:dstrain >&2
dstrain=$(bazel info "${DSTRAIN_BAZEL_CONFIG[@]}" bazel-bin 2>/dev/null)/client/cli/dstrain
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

job() {  # NAME STAGES MICRO_BATCHES INTERVAL [WORLD]
  python3 - bench/pipeline/job.json "$out/$1.json" "$2" "$3" "$4" "$steps" "${5:-4}" <<'PY'
import json, os, sys
src, dst = sys.argv[1:3]
stages, micro, interval, steps, world = map(int, sys.argv[3:8])
j = json.load(open(src))
j["data"]["train"] = os.path.join(os.path.dirname(os.path.abspath(src)), j["data"]["train"])
j["gradient_accumulation_steps"] = micro
j["job"]["pipeline_stages"] = stages
j["job"]["world_size"] = world
j["job"]["train_steps"] = steps
j["pipeline"] = {"partition": "uniform", "activation_checkpoint_interval": interval}
json.dump(j, open(dst, "w"))
PY
}
run() {  # NAME [NPROC]
  "$dstrain" launch --nproc "${2:-4}" "$out/$1.json" --metrics-out "$out/$1.jsonl" > "$out/$1.log" 2>&1 ||
    { cat "$out/$1.log"; exit 1; }
  "$dstrain" estimate --json "$out/$1.json" > "$out/$1.estimate.json"
}

echo "pipeline on 4 processes, $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u +%F), $steps steps (first not timed)"
for m in 4 8 16; do
  for s in 1 2 4; do
    # Data parallelism with the same global batch: M·D/4 micro-batches per rank.
    if [[ $s == 1 ]]; then job "s1_m$m" 1 "$m" 0; else job "s${s}_m$m" "$s" "$m" 0; fi
    run "s${s}_m$m"
  done
done
for s in 2 4; do
  job "s${s}_m16_ckpt" "$s" 16 1
  run "s${s}_m16_ckpt"
  # One process per stage, each on its own core, where the machine has the cores.
  if ((s <= $(nproc))); then
    for m in 4 8 16; do
      job "own_s${s}_m$m" "$s" "$m" 0 "$s"
      run "own_s${s}_m$m" "$s"
    done
  fi
done
python3 - "$out" "$steps" "$(nproc)" <<'PY'
import json, os, statistics, sys
out, steps, cores = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(name):
    return ([json.loads(l) for l in open(f"{out}/{name}.jsonl")],
            json.load(open(f"{out}/{name}.estimate.json"))["stages"])
B, T, C = 4, 128, 256
def bubble_of(timed, stages):
    """Each stage's median over the timed steps, averaged over the stages; and the per-stage."""
    per = [statistics.median(l["stages"][i]["bubble_fraction"] for l in timed)
           for i in range(stages)]
    return statistics.mean(per), per
message = B * T * C * 4
print()
print("| S | M | bubble measured | 1F1B (S-1)/(M+S-1) | measured / formula | tok/s | vs data parallel (same global batch) | p2p bytes/step | activations x M x 2 |")
print("|---|---|---|---|---|---|---|---|---|")
ok_bubble, ok_bytes = True, True
for m in (4, 8, 16):
    dp_lines, _ = load(f"s1_m{m}")
    for s in (1, 2, 4):
        lines, _ = load(f"s{s}_m{m}")
        timed = lines[1:]
        tok = statistics.median(l["tokens_per_s"] for l in timed)
        if s == 1:
            print(f"| 1 | {m} | - | 0 | - | {tok:,.0f} | 1.00x | 0 | 0 |")
            continue
        dp_tok = statistics.median(l["tokens_per_s"] for l in dp_lines[1:])
        bubble, _ = bubble_of(timed, s)
        formula = (s - 1) / (m + s - 1)
        # Bytes per step over the pipeline, from each stage's cumulative count.
        last = lines[-1]
        sent = sum(st["p2p_bytes_sent"] for st in last["stages"]) // last["step"]
        want = 2 * (s - 1) * m * message
        ok_bytes &= sent == want
        if m == 16 and cores >= 4:
            ok_bubble &= abs(bubble - formula) <= 0.2 * formula
        print(f"| {s} | {m} | {bubble:.3f} | {formula:.3f} | {bubble / formula:.2f} | {tok:,.0f} | "
              f"{tok / dp_tok:.2f}x | {sent:,} | {want:,} |")
print()
print(f"one process per stage, each on its own core (S <= {cores} cores), 1 data rank:")
print("| S | M | bubble measured | 1F1B (S-1)/(M+S-1) | measured / formula | per stage |")
print("|---|---|---|---|---|---|")
for s in (2, 4):
    if not os.path.exists(f"{out}/own_s{s}_m4.jsonl"):
        continue
    for m in (4, 8, 16):
        lines, _ = load(f"own_s{s}_m{m}")
        timed = lines[1:]
        bubble, per_stage = bubble_of(timed, s)
        formula = (s - 1) / (m + s - 1)
        if m == 16 and cores < 4:
            ok_bubble &= abs(bubble - formula) <= 0.2 * formula
        print(f"| {s} | {m} | {bubble:.3f} | {formula:.3f} | {bubble / formula:.2f} | "
              f"{' '.join(f'{b:.3f}' for b in per_stage)} |")
print()
print("activation memory per stage at M = 16, bytes: measured (stage's allocator) / dstrain estimate")
print("| S | stage | in flight | no checkpointing | checkpointing every block | saved |")
print("|---|---|---|---|---|---|")
for s in (2, 4):
    plain, est_plain = load(f"s{s}_m16")
    ckpt, est_ckpt = load(f"s{s}_m16_ckpt")
    for st in range(s):
        a = plain[-1]["stages"][st]["activations_bytes"]
        b = ckpt[-1]["stages"][st]["activations_bytes"]
        ea, eb = est_plain[st]["activations_bytes"], est_ckpt[st]["activations_bytes"]
        print(f"| {s} | {st} | {est_plain[st]['micro_batches_in_flight']} | {a:,} / {ea:,} | "
              f"{b:,} / {eb:,} | {1 - b / a:.0%} |")
        ok_bytes &= a == ea and b == eb
print()
where = "the 4-process runs" if cores >= 4 else "one process per stage and core"
print(f"targets: bubble within 20% of the formula at M = 16 ({where}): "
      f"{'met' if ok_bubble else 'NOT met'}; "
      f"point-to-point bytes and activations exact: {'met' if ok_bytes else 'NOT met'}")
PY
