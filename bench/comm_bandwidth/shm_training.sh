#!/usr/bin/env bash
# ZeRO stages 0-3 at 2 local ranks over Gloo (DSTRAIN_SHM=0), over the shared-memory communicator
# staging every collective (DSTRAIN_SHM_SHARED_BUFFERS=0) and over it with the engine's buffers in
# memory the ranks share (the default, docs/shm.md "Shared buffers"): the median step time and
# the median time a step waited for its collectives (comm_s), on bench/zero/job.json's 8-layer
# GPT (6.3M parameters), fp32 or PRECISION. Rounds alternate the three; each figure is the median
# over ROUNDS runs of the median over a run's steps after the first.
#
#   bench/comm_bandwidth/shm_training.sh [ROUNDS [STEPS [PRECISION]]]   (default 3, 8, fp32)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
steps=${2:-8}
precision=${3:-fp32}
source tools/bazel_flags.sh
bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //client/cli:dstrain >&2
dstrain=$(bazel info "${DSTRAIN_BAZEL_CONFIG[@]}" bazel-bin 2>/dev/null)/client/cli/dstrain
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

for stage in 0 1 2 3; do
  python3 - bench/zero/job.json "$out/job_$stage.json" "$stage" "$steps" "$precision" <<'PY'
import json, os, sys
src, dst, stage, steps, precision = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
j = json.load(open(src))
j["data"]["train"] = os.path.join(os.path.dirname(os.path.abspath(src)), j["data"]["train"])
j["job"]["train_steps"] = steps
j["zero_optimization"] = {"stage": stage}
if precision != "fp32":
    j[precision] = {"enabled": True}
json.dump(j, open(dst, "w"))
PY
done

declare -A env_of=(
  [gloo]="DSTRAIN_SHM=0"
  [shm_staged]="DSTRAIN_SHM_SHARED_BUFFERS=0"
  [shm_shared]="DSTRAIN_SHM=1"
)
kinds=(gloo shm_staged shm_shared)
for ((r = 0; r < rounds; r++)); do
  for stage in 0 1 2 3; do
    for kind in "${kinds[@]}"; do
      # shellcheck disable=SC2086
      env ${env_of[$kind]} "$dstrain" launch --nproc 2 "$out/job_$stage.json" \
        --metrics-out "$out/m_${stage}_${kind}_$r.jsonl" > "$out/log_${stage}_${kind}_$r" 2>&1
    done
  done
done

python3 - "$out" "$rounds" <<'PY'
import glob, json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def run_medians(path):
    lines = [json.loads(l) for l in open(path)][1:]
    return statistics.median(l["step_ms"] for l in lines), statistics.median(l["comm_s"] * 1e3 for l in lines)
print(f"{'stage':>5} {'backend':>10} {'step_ms':>9} {'comm_ms':>9} {'vs gloo':>8}")
for stage in range(4):
    base = None
    for kind in ("gloo", "shm_staged", "shm_shared"):
        runs = [run_medians(f"{out}/m_{stage}_{kind}_{r}.jsonl") for r in range(rounds)]
        step = statistics.median(s for s, _ in runs)
        comm = statistics.median(c for _, c in runs)
        base = base or step
        print(f"{stage:>5} {kind:>10} {step:9.1f} {comm:9.1f} {base / step:8.2f}x")
PY
