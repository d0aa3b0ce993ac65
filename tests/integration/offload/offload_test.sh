#!/usr/bin/env bash
# NVMe optimizer offload end to end through the CLI (docs/offload.md): two processes (dstrain
# launch, Gloo) in bf16 at ZeRO stages 2 and 3 with zero_optimization.offload_optimizer.device
# "nvme" train to the same final weights and losses, bitwise, as the same job with the state in
# memory; the log carries the swap engine's self-test, the metrics the swap file's size (which
# `dstrain estimate` gave before the run, as it gave the memory left), and nothing is left under
# nvme_path afterwards. At stage 3 the same with the parameters on NVMe too (offload_param
# "nvme", both files in one directory). A bad nvme_path is refused before training, naming
# the path.
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
dstrain="$ws/client/cli/dstrain"
src="$ws/tests/integration/data_parallel/job.json"
out="$TEST_TMPDIR/offload"
nvme="$TEST_TMPDIR/nvme"
mkdir -p "$out" "$nvme"

make_job() {  # name stage nvme_path|"" [extra offload json] [params: also offload_param]
  /usr/bin/python3 - "$src" "$out/$1.json" "$2" "$3" "${4:-{\}}" "${5:-}" <<'PY'
import json, os, sys
src, dst, stage, nvme, extra, params = sys.argv[1:7]
j = json.load(open(src))
j["data"]["train"] = os.path.join(os.path.dirname(os.path.abspath(src)), j["data"]["train"])
j["bf16"] = {"enabled": True}
j["zero_optimization"] = {"stage": int(stage), "sub_group_size": 5000}
if nvme:
    o = {"device": "nvme", "nvme_path": nvme, "pipeline_read": True, "pipeline_write": True}
    o.update(json.loads(extra))
    j["zero_optimization"]["offload_optimizer"] = o
    if params:
        j["zero_optimization"]["offload_param"] = {"device": "nvme", "nvme_path": nvme,
                                                   "buffer_count": 2}
json.dump(j, open(dst, "w"))
PY
}

run() {  # job metrics model
  "$dstrain" launch --nproc 2 "$1" --comm-timeout 60 --metrics-out "$2" --save-model "$3" \
    > "$2.log" 2>&1
}

for stage in 2 3; do
  make_job "memory_s$stage" "$stage" ""
  make_job "nvme_s$stage" "$stage" "$nvme" '{"buffer_count": 3}'
  run "$out/memory_s$stage.json" "$out/m_memory_s$stage.jsonl" "$out/w_memory_s$stage.bin"
  run "$out/nvme_s$stage.json" "$out/m_nvme_s$stage.jsonl" "$out/w_nvme_s$stage.bin"
  grep -q "offload: optimizer state on NVMe at $nvme/dstrain-dp-equivalence/rank0 .*self-test" \
    "$out/m_nvme_s$stage.jsonl.log"
  cmp "$out/w_memory_s$stage.bin" "$out/w_nvme_s$stage.bin"
  /usr/bin/python3 - "$out/m_memory_s$stage.jsonl" "$out/m_nvme_s$stage.jsonl" "$stage" <<'PY'
import json, sys
memory = [json.loads(l) for l in open(sys.argv[1])]
nvme = [json.loads(l) for l in open(sys.argv[2])]
assert len(memory) == len(nvme) == 20, (len(memory), len(nvme))
for a, b in zip(memory, nvme):
    assert a["loss"] == b["loss"] and a["grad_norm"] == b["grad_norm"], (a, b)
    assert "nvme_bytes" not in a and b["nvme_bytes"] > 0, (a, b)
    assert b["swap_bytes"] == 2 * b["nvme_bytes"], b
    assert 0 <= b["swap_wait_s"] <= b["swap_update_s"], b
    # The optimizer state left memory: what is left of it are the swap buffers.
    assert b["mem_bytes"]["optimizer_state"] < a["mem_bytes"]["optimizer_state"], (a, b)
print(f"stage {sys.argv[3]}: 20 steps and final weights bitwise equal; "
      f"nvme {nvme[-1]['nvme_bytes']} bytes, optimizer_state in memory "
      f"{nvme[-1]['mem_bytes']['optimizer_state']} vs {memory[-1]['mem_bytes']['optimizer_state']}")
PY
  # `dstrain estimate` told each figure before the run: the optimizer state left in memory (the
  # swap's buffers) and the swap file's bytes, and the in-memory state of the job without offload.
  "$dstrain" estimate "$out/nvme_s$stage.json" --world 2 --json > "$out/estimate_s$stage.json"
  /usr/bin/python3 - "$out/estimate_s$stage.json" "$out/m_memory_s$stage.jsonl" \
    "$out/m_nvme_s$stage.jsonl" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["offload_optimizer"]
memory = json.loads(open(sys.argv[2]).readlines()[-1])
nvme = json.loads(open(sys.argv[3]).readlines()[-1])
assert e["nvme"]["nvme_bytes"] == nvme["nvme_bytes"], (e, nvme)
assert e["nvme"]["optimizer_state_bytes"] == nvme["mem_bytes"]["optimizer_state"], (e, nvme)
assert e["none"]["optimizer_state_bytes"] == memory["mem_bytes"]["optimizer_state"], (e, memory)
assert e["none"]["nvme_bytes"] == 0 and e["cpu"] == e["none"], e
print("estimate matches the allocator and the swap file:", e["nvme"])
PY
  # The job's swap files are gone with it.
  if [[ -n "$(ls -A "$nvme")" ]]; then
    echo "left under nvme_path:" >&2
    find "$nvme" >&2
    exit 1
  fi
done

# Stage 3 with the parameters on NVMe beside the state: bitwise the in-memory run (memory_s3
# above), both files in the metrics' nvme_bytes as `dstrain estimate` said, nothing left behind.
make_job params_s3 3 "$nvme" '{"buffer_count": 3}' params
run "$out/params_s3.json" "$out/m_params_s3.jsonl" "$out/w_params_s3.bin"
grep -q "offload: parameters on NVMe at $nvme/dstrain-dp-equivalence/rank0 " \
  "$out/m_params_s3.jsonl.log"
cmp "$out/w_memory_s3.bin" "$out/w_params_s3.bin"
"$dstrain" estimate "$out/params_s3.json" --world 2 --json > "$out/estimate_params_s3.json"
/usr/bin/python3 - "$out/m_memory_s3.jsonl" "$out/m_nvme_s3.jsonl" "$out/m_params_s3.jsonl" \
  "$out/estimate_params_s3.json" <<'PY'
import json, sys
memory, state, params = ([json.loads(l) for l in open(p)] for p in sys.argv[1:4])
e = json.load(open(sys.argv[4]))["offload_optimizer"]["nvme"]
assert len(params) == 20, len(params)
for a, c in zip(memory, params):
    assert a["loss"] == c["loss"] and a["grad_norm"] == c["grad_norm"], (a, c)
    # Both files: more than the state's alone; the step moved the parameters' bytes too.
    assert c["nvme_bytes"] > state[0]["nvme_bytes"], (c, state[0])
    assert c["swap_bytes"] > 2 * state[0]["nvme_bytes"], (c, state[0])
    assert c["nvme_bytes"] == e["nvme_bytes"], (c, e)
    # In memory the parameters' swap buffers, as the estimate said.
    assert c["mem_bytes"]["params"] == e["params_bytes"], (c, e)
print("stage 3, parameters on NVMe too: 20 steps and final weights bitwise equal; nvme",
      params[-1]["nvme_bytes"], "bytes (estimate", e["nvme_bytes"], ")")
PY
if [[ -n "$(ls -A "$nvme")" ]]; then
  echo "left under nvme_path:" >&2
  find "$nvme" >&2
  exit 1
fi

# A missing nvme_path: refused at start with the path, no step taken.
make_job bad 2 "$nvme/missing"
if "$dstrain" train "$out/bad.json" --metrics-out "$out/m_bad.jsonl" > "$out/bad.log" 2>&1; then
  echo "a missing nvme_path was accepted" >&2
  exit 1
fi
grep -q "$nvme/missing" "$out/bad.log"
[[ ! -s "$out/m_bad.jsonl" ]]
echo "offload_test: passed"
