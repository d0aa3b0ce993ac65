#!/usr/bin/env bash
# All-reduce bus bandwidth at 2 processes of dstrain's shared-memory communicator, on buffers from
# Communicator::AllocateHostBuffer (mapped by both ranks: no staging, "shm_host") and on each
# process's own memory (staged through the segment, "shm"), and of its Gloo communicator, next to
# single-thread memcpy of the same size on the same machine, with the ratios to memcpy (the
# target, docs/shm.md: >= 0.5 from 16 MiB). Each figure is the median over ROUNDS runs of
# comm_bench (each of which reports the median of its own iterations).
#
#   bench/comm_bandwidth/shm_bandwidth.sh [SIZE_BYTES [ROUNDS]]
#
# Without SIZE_BYTES: 16 MiB, 64 MiB and 256 MiB. ROUNDS defaults to 5.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/bazel_flags.sh
sizes=("${1:-}")
[[ -n "${1:-}" ]] || sizes=($((16 << 20)) $((64 << 20)) $((256 << 20)))
rounds="${2:-5}"
bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //bench/comm_bandwidth:comm_bench >&2
bin="$(bazel info "${DSTRAIN_BAZEL_CONFIG[@]}" bazel-bin 2>/dev/null)/bench/comm_bandwidth/comm_bench"

# median GB/s of `rounds` runs of: comm_bench ARGS... (one size)
median() {
  local values=()
  local out
  for ((i = 0; i < rounds; i++)); do
    # Parsed after the run: a parser started beside it would take one of two cores from the ranks.
    out="$("$bin" "$@")"
    values+=("$(python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["busbw_gbs"])' <<<"$out")")
  done
  printf '%s\n' "${values[@]}" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'
}

printf '%-12s %12s %10s %10s %12s %12s %12s\n' bytes shm_host_GB/s shm_GB/s gloo_GB/s \
  memcpy_GB/s host/memcpy shm/memcpy
for size in "${sizes[@]}"; do
  common=(--min-bytes "$size" --max-bytes "$size" --iters 20)
  host=$(median --nproc 2 --backend shm --host-buffers --ops allreduce "${common[@]}")
  shm=$(median --nproc 2 --backend shm --ops allreduce "${common[@]}")
  gloo=$(median --nproc 2 --backend gloo --ops allreduce "${common[@]}")
  mem=$(median --memcpy "${common[@]}")
  printf '%-12s %12.2f %10.2f %10.2f %12.2f %12.2f %12.2f\n' "$size" "$host" "$shm" "$gloo" \
    "$mem" "$(python3 -c "print($host / $mem)")" "$(python3 -c "print($shm / $mem)")"
done
