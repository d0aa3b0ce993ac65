#!/usr/bin/env bash
# GPT-2 124M training on one GPU, dstrain against PyTorch in the same run: n_layer 12, n_embd 768,
# n_head 12, vocabulary 50257 padded to 50304, T 1024, micro-batch 16, bf16, AdamW, clipping 1.0.
# dstrain runs dstrain_bench --device cuda; PyTorch runs torch_gpu_bench.py eager and with
# torch.compile. Alternates ROUNDS times and prints each one's median tokens/s, ms/step, MFU and
# peak memory, and dstrain's ratio to each. MFU counts 6·N + 12·L·T·C FLOPs per token against the
# dense bf16 peak given as PEAK_TFLOPS (default 989: an H100 or H200 SXM).
#
#   bench/gpu/gpu_bench.sh [ROUNDS] [DSTRAIN_BENCH]     (in the repo, or from a gpu_pack DIR)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rounds=${1:-3}
bench=${2:-}
if [[ -z "$bench" ]]; then
  for c in "$here/../bin/dstrain_bench" "$here/../../bazel-bin/bench/train_throughput/dstrain_bench"; do
    [[ -x $c ]] && bench=$c && break
  done
fi
[[ -x "$bench" ]] || { echo "gpu_bench: no dstrain_bench (build //bench/train_throughput:dstrain_bench)" >&2; exit 2; }
peak=${PEAK_TFLOPS:-989}
python=${PYTHON:-python3}
shape=(--layers 12 --embd 768 --heads 12 --vocab 50257 --padded-vocab 50304 --seq 1024 --batch 16)
declare -A runs
for ((r = 0; r < rounds; r++)); do
  runs[dstrain]+="$("$bench" "${shape[@]}" --max-seq 1024 --precision bf16 --device cuda \
    --steps 10 --warmup 3 --peak-tflops "$peak")"$'\n'
  runs[eager]+="$("$python" "$here/torch_gpu_bench.py" "${shape[@]}" --peak-tflops "$peak")"$'\n'
  runs[compile]+="$("$python" "$here/torch_gpu_bench.py" "${shape[@]}" --compile \
    --peak-tflops "$peak")"$'\n'
done
printf '%s\n' "${runs[dstrain]}" >/tmp/gpu_bench_dstrain.jsonl
printf '%s\n' "${runs[eager]}" >/tmp/gpu_bench_eager.jsonl
printf '%s\n' "${runs[compile]}" >/tmp/gpu_bench_compile.jsonl
"$python" - <<'PY'
import json, statistics
rows = {}
for name in ("dstrain", "eager", "compile"):
    rs = [json.loads(l) for l in open(f"/tmp/gpu_bench_{name}.jsonl") if l.strip()]
    rows[name] = rs
print("| impl | tokens/s (median) | ms/step | MFU | peak memory | rounds |")
print("|---|---|---|---|---|---|")
med = {}
for name, rs in rows.items():
    tps = statistics.median(r["tokens_per_s"] for r in rs)
    med[name] = tps
    ms = statistics.median(r.get("step_ms", r.get("step_s", 0) * 1e3) for r in rs)
    mfu = statistics.median(r.get("mfu", 0) for r in rs)
    mem = max(r.get("mem_peak_bytes", 0) for r in rs) / 1e9
    each = " ".join("%.0f" % r["tokens_per_s"] for r in rs)
    print(f"| {name} | {tps:,.0f} | {ms:.1f} | {100 * mfu:.1f}% | {mem:.1f} GB | {each} |")
print()
print(f"dstrain / PyTorch eager: {med['dstrain'] / med['eager']:.2f}x   "
      f"dstrain / torch.compile: {med['dstrain'] / med['compile']:.2f}x   (target: >= 1.00x eager)")
PY
