#!/usr/bin/env bash
# Bus bandwidth of AllReduce / ReduceScatter / AllGather on 2 and 4 local ranks, 1 KiB..256 MiB:
# dstrain's Gloo communicator (comm_bench) side by side with Gloo driven directly (raw_gloo_bench,
# Debian's libgloo with Gloo's own algorithms: the target is dstrain >= 95% of it from 16 MiB up)
# and with Gloo through torch.distributed (Debian's torch 1.13; its Gloo has no reduce_scatter).
#
# A single run on a shared 2-core machine moves by +-30%, so the implementations alternate in
# ROUNDS rounds (each round, per rank count: dstrain, raw Gloo, torch), and the table shows the
# median per (op, ranks, size) of each, the ratios of those medians, the spread of the per-round
# dstrain/raw ratio, and per op and rank count the worst ratio from 16 MiB up and the latency floor
# (comm_summary.py). The raw files stay in OUT_DIR when it is set.
#
# Usage: bench/comm_bandwidth/comm_bandwidth.sh [MAX_BYTES] [ROUNDS]
#   MAX_BYTES (default 268435456; also $MAX_BYTES), ROUNDS (default 3; also $ROUNDS).
#   $RAW_ALLREDUCE_ALGO picks raw Gloo's allreduce (see raw_gloo_bench.cc; default its own).
#   $BAZEL is the bazel command (e.g. "bazel --output_base=DIR" to keep a separate server).
set -euo pipefail
cd "$(dirname "$0")/../.."
max=${1:-${MAX_BYTES:-268435456}}
rounds=${2:-${ROUNDS:-3}}
if ! [[ "$max" =~ ^[0-9]+$ && "$rounds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [MAX_BYTES] [ROUNDS]" >&2
  exit 2
fi
read -r -a bazel <<<"${BAZEL:-bazel}"
source tools/bazel_flags.sh
# No convenience symlinks: the binaries are found through `bazel info`, and the workspace's
# bazel-* links may belong to another output base.
"${bazel[@]}" build "${DSTRAIN_BAZEL_CONFIG[@]}" --symlink_prefix=/ \
  //bench/comm_bandwidth:comm_bench //bench/comm_bandwidth:raw_gloo_bench >&2
bin=$("${bazel[@]}" info "${DSTRAIN_BAZEL_CONFIG[@]}" bazel-bin 2>/dev/null)/bench/comm_bandwidth
raw_flags=()
[[ -n "${RAW_ALLREDUCE_ALGO:-}" ]] && raw_flags=(--allreduce-algo "$RAW_ALLREDUCE_ALGO")
have_torch=1
if ! /usr/bin/python3 -c 'import torch.distributed' 2>/dev/null; then
  echo "comm_bandwidth: no torch for /usr/bin/python3 (apt install python3-torch); skipping it" >&2
  have_torch=0
fi
out=${OUT_DIR:-$(mktemp -d)}
mkdir -p "$out"
[[ -z "${OUT_DIR:-}" ]] && trap 'rm -rf "$out"' EXIT

# One run of one implementation; a failed run is reported and left out of the medians.
run() {  # impl ranks round command...
  local impl=$1 n=$2 r=$3
  shift 3
  echo "comm_bandwidth: round $r/$rounds, $n ranks, $impl" >&2
  if ! "$@" >"$out/$impl.$n.$r.jsonl"; then
    echo "comm_bandwidth: $impl on $n ranks failed in round $r (left out)" >&2
  fi
}
for ((r = 1; r <= rounds; r++)); do
  for n in 2 4; do
    run dstrain-gloo "$n" "$r" "$bin/comm_bench" --nproc "$n" --min-bytes 1024 --max-bytes "$max"
    run raw-gloo "$n" "$r" "$bin/raw_gloo_bench" --nproc "$n" --min-bytes 1024 \
      --max-bytes "$max" "${raw_flags[@]}"
    if ((have_torch)); then
      run torch-gloo "$n" "$r" /usr/bin/python3 bench/comm_bandwidth/torch_gloo_bench.py "$n" \
        1024 "$max" 5
    fi
  done
done
python3 bench/comm_bandwidth/comm_summary.py "$out"
