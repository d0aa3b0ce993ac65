#!/usr/bin/env bash
# Data parallelism over the shared-memory communicator (the default for ranks on one host,
# docs/shm.md) with real processes: ZeRO stages 0-3, fp32 and bf16, gradient clipping on.
#   - At 2 ranks the same jobs over Gloo (DSTRAIN_SHM=0): losses and final weights bitwise equal
#     (a sum of two terms does not depend on its order, and every backend rounds a 16-bit
#     reduction once).
#   - At 3 ranks with the buffers in memory the ranks share (the default: parameters, gradients
#     and buckets carved from Communicator::AllocateHostBuffer, collectives without staging)
#     against the same backend staging everything (DSTRAIN_SHM_SHARED_BUFFERS=0): bitwise equal,
#     both reducing every element in rank order.
# Each shm run must say that it put its buffers in shared memory, or that it did not.
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
dstrain="$ws/client/cli/dstrain"
job="$ws/tests/integration/data_parallel/job.json"
out="$TEST_TMPDIR/shm"
mkdir -p "$out"

make_job() {  # stage precision out
  /usr/bin/python3 - "$job" "$3" "$1" "$2" <<'PY'
import json, os, sys
src, dst, stage, precision = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
j = json.load(open(src))
j["data"]["train"] = os.path.join(os.path.dirname(os.path.abspath(src)), j["data"]["train"])
j["job"]["train_steps"] = 8
j["train_batch_size"] = 12  # 2 and 3 ranks
j["zero_optimization"] = {"stage": stage, "reduce_bucket_size": 20000,
                          "stage3_param_persistence_threshold": 100,
                          "stage3_prefetch_bucket_size": 60000}
if precision == "bf16":
    j["bf16"] = {"enabled": True}
json.dump(j, open(dst, "w"))
PY
}

run() {  # name nproc job [env...]
  local name=$1 n=$2 file=$3
  shift 3
  env "$@" "$dstrain" launch --nproc "$n" "$file" --comm-timeout 60 \
    --metrics-out "$out/$name.jsonl" --save-model "$out/$name.bin" > "$out/$name.log" 2>&1 || {
    cat "$out/$name.log" >&2
    return 1
  }
  grep -q '^\[rank 0\] done: 8 steps' "$out/$name.log"
}

same() {  # a b what
  cmp "$out/$1.bin" "$out/$2.bin"
  /usr/bin/python3 - "$out/$1.jsonl" "$out/$2.jsonl" "$3" <<'PY'
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(f)] for f in sys.argv[1:3])
assert len(a) == 8 and a == b, (a, b)
print(f"{sys.argv[3]}: bitwise (weights and 8 losses)")
PY
}

shared='comm: .* in .* of memory shared by the group'
for precision in fp32 bf16; do
  for stage in 0 1 2 3; do
    name="s${stage}_$precision"
    make_job "$stage" "$precision" "$out/$name.json"
    run "gloo2_$name" 2 "$out/$name.json" DSTRAIN_SHM=0
    run "shm2_$name" 2 "$out/$name.json"
    grep -q "$shared" "$out/shm2_$name.log" || {
      echo "shm2_$name: no line saying the buffers are shared" >&2
      exit 1
    }
    same "gloo2_$name" "shm2_$name" "2 ranks, stage $stage, $precision: shm (shared buffers) vs Gloo"
    run "shm3_$name" 3 "$out/$name.json"
    run "staged3_$name" 3 "$out/$name.json" DSTRAIN_SHM_SHARED_BUFFERS=0
    grep -q "$shared" "$out/shm3_$name.log"
    if grep -q "$shared" "$out/staged3_$name.log"; then
      echo "staged3_$name: shared buffers with DSTRAIN_SHM_SHARED_BUFFERS=0" >&2
      exit 1
    fi
    same "staged3_$name" "shm3_$name" "3 ranks, stage $stage, $precision: shared vs staged"
  done
done
echo "shm_test: passed"
