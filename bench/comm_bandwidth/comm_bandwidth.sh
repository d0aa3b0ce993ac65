#!/usr/bin/env bash
# Bus bandwidth of AllReduce / ReduceScatter / AllGather on 2 and 4 local ranks, 1 KiB..256 MiB,
# dstrain's Gloo communicator side by side with Gloo through torch.distributed (Debian's torch
# 1.13; its Gloo has no reduce_scatter). Usage: bench/comm_bandwidth/comm_bandwidth.sh [MAX_BYTES]
set -euo pipefail
cd "$(dirname "$0")/../.."
max=${1:-268435456}
source tools/bazel_flags.sh
bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //bench/comm_bandwidth:comm_bench >&2
bench=$(bazel info "${DSTRAIN_BAZEL_CONFIG[@]}" bazel-bin 2>/dev/null)/bench/comm_bandwidth/comm_bench
out=$(mktemp -d)
for n in 2 4; do
  "$bench" --nproc "$n" --min-bytes 1024 --max-bytes "$max" > "$out/ours$n.jsonl"
  /usr/bin/python3 bench/comm_bandwidth/torch_gloo_bench.py "$n" 1024 "$max" 5 > "$out/torch$n.jsonl"
done
python3 - "$out" <<'PY'
import json, sys, glob, os
d = sys.argv[1]
rows = {}
for f in glob.glob(os.path.join(d, "*.jsonl")):
    for line in open(f):
        r = json.loads(line)
        rows.setdefault((r["op"], r["ranks"], r["bytes"]), {})[r["impl"]] = r
print("| op | ranks | bytes | dstrain busbw GB/s | torch-gloo busbw GB/s | ratio | dstrain time us |")
print("|---|---|---|---|---|---|---|")
for (op, n, b) in sorted(rows):
    v = rows[(op, n, b)]
    ours = v.get("dstrain-gloo"); theirs = v.get("torch-gloo")
    if ours is None:
        continue
    t = f"{theirs['busbw_gbs']:.3f}" if theirs else "n/a"
    ratio = f"{ours['busbw_gbs'] / theirs['busbw_gbs']:.2f}" if theirs and theirs["busbw_gbs"] > 0 else "-"
    print(f"| {op} | {n} | {b} | {ours['busbw_gbs']:.3f} | {t} | {ratio} | {ours['time_us']:.0f} |")
PY
rm -rf "$out"
