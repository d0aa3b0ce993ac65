#!/usr/bin/env bash
# ZeRO figures, side by side in one run: for stages 0-3 at 1, 2, 4 and 8 local ranks
# (`dstrain launch`: shared memory between the local ranks since 2026-12-07, DSTRAIN_SHM=0 for
# Gloo over loopback) on an 8-layer GPT (6.3M parameters, bench/zero/job.json):
#   1. per-rank bytes of parameters + gradients + optimizer state (rank 0's allocator after the
#      last step) against the ZeRO paper's formulas: fp32 Adam 16, 8 + 8/N, 4 + 12/N, 16/N bytes
#      per parameter; mixed precision (PRECISION=bf16 or fp16) 16, 4 + 12/N, 2 + 14/N, 16/N;
#   2. bytes each rank sends per step (ring count, median over steps) against the paper's
#      analysis: plain data parallelism 2Ψ·(N−1)/N (an all-reduce), stages 1 and 2 the same,
#      stage 3 1.5x (two all-gathers and a reduce-scatter);
#   3. median step time of stages 1-3 relative to stage 0 at 2 and 4 ranks.
# Stage 2 and 3 run with 1M-float buckets and stage 3 without reuse caching, so their transient
# buffers are small and every module is gathered twice a step (the paper's setting).
# Usage: bench/zero/zero_bench.sh [STEPS] [PRECISION] (default 6 steps, the first not timed;
# precision fp32, bf16 or fp16).
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-6}
precision=${2:-fp32}
source tools/bazel_flags.sh
bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //client/cli:dstrain >&2
dstrain=$(bazel info "${DSTRAIN_BAZEL_CONFIG[@]}" bazel-bin 2>/dev/null)/client/cli/dstrain
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

for n in 1 2 4 8; do
  for stage in 0 1 2 3; do
    python3 - bench/zero/job.json "$out/job_${n}_$stage.json" "$stage" "$steps" "$precision" <<'PY'
import json, os, sys
src, dst, stage, steps, precision = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                     int(sys.argv[4]), sys.argv[5])
j = json.load(open(src))
j["data"]["train"] = os.path.join(os.path.dirname(os.path.abspath(src)), j["data"]["train"])
j["job"]["train_steps"] = steps
j["zero_optimization"] = {"stage": stage, "reduce_bucket_size": 1000000,
                          "stage3_max_reuse_distance": 0, "stage3_param_persistence_threshold": 1000}
if precision != "fp32":
    j[precision] = {"enabled": True}
    if precision == "fp16":
        j["fp16"]["initial_scale_power"] = 12
json.dump(j, open(dst, "w"))
PY
    echo "stage $stage, $n rank(s), $precision..." >&2
    "$dstrain" launch --nproc "$n" "$out/job_${n}_$stage.json" --comm-timeout 120 \
      --metrics-out "$out/m_${n}_$stage.jsonl" > "$out/log_${n}_$stage.txt"
  done
done
"$dstrain" estimate bench/zero/job.json --world 1 | grep parameters | head -1 >&2

python3 - "$out" "$precision" <<'PY'
import json, statistics, sys
d, precision = sys.argv[1], sys.argv[2]
mixed = precision != "fp32"
half = 2 if mixed else 4  # bytes of a parameter or gradient as stored and sent
# Ψ: the model's parameter count (8 blocks of 12C²+13C, wte 256·C, wpe 64·C, final 2C).
C, L = 256, 8
psi = L * (12 * C * C + 13 * C) + 256 * C + 64 * C + 2 * C
def rows(n, s):
    return [json.loads(l) for l in open(f"{d}/m_{n}_{s}.jsonl")]
print(f"Model: GPT L={L} C={C}, {psi / 1e6:.3f}M parameters, {precision} with Adam; "
      "rank 0's figures.\n")
print("1. Per-rank parameters + gradients + optimizer state (MB), measured vs ZeRO formula")
print("| ranks | stage 0 | stage 1 | stage 2 | stage 3 |")
print("|---|---|---|---|---|")
worst = 0
for n in (1, 2, 4, 8):
    cells = []
    for s in range(4):
        m = rows(n, s)[-1]["mem_bytes"]
        got = m["params"] + m["grads"] + m["optimizer_state"]
        want = psi * ([16, 4 + 12 / n, 2 + 14 / n, 16 / n] if mixed
                      else [16, 8 + 8 / n, 4 + 12 / n, 16 / n])[s]
        worst = max(worst, abs(got / want - 1))
        cells.append(f"{got / 1e6:.2f} vs {want / 1e6:.2f} ({got / want:.3f}x)")
    print(f"| {n} | " + " | ".join(cells) + " |")
print(f"worst deviation from the formulas: {worst * 100:.2f}% (target: within 5%)\n")
print("2. Bytes sent per rank per step (MB), measured vs the paper's analysis (DP = 2Ψ(N-1)/N)")
print("| ranks | stage 0 | stage 1 | stage 2 | stage 3 |")
print("|---|---|---|---|---|")
for n in (2, 4, 8):
    dp = 2 * psi * half * (n - 1) / n
    cells = []
    for s in range(4):
        got = statistics.median(r["comm_bytes"] for r in rows(n, s)[1:])
        want = dp * (1.5 if s == 3 else 1.0)
        cells.append(f"{got / 1e6:.2f} ({got / dp:.3f}x DP; paper {want / dp:.1f}x)")
    print(f"| {n} | " + " | ".join(cells) + " |")
print("\n3. Median step time (ms) and ratio to stage 0")
print("| ranks | stage 0 | stage 1 | stage 2 | stage 3 |")
print("|---|---|---|---|---|")
for n in (1, 2, 4):
    t0 = statistics.median(r["step_ms"] for r in rows(n, 0)[1:])
    cells = [f"{t0:.0f}"]
    for s in (1, 2, 3):
        t = statistics.median(r["step_ms"] for r in rows(n, s)[1:])
        cells.append(f"{t:.0f} ({t / t0:.2f}x)")
    print(f"| {n} | " + " | ".join(cells) + " |")
PY
