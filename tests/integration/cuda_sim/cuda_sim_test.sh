#!/usr/bin/env bash
# The trainer on CUDA, end to end on the runtime simulator (//client/cli:dstrain_cuda_sim: the
# CLI with CUDA simulated on the CPU), against the CPU trainer (//client/cli:dstrain):
#   1. one rank, fp32: `train --device cuda` logs the CUDA device and device memory, and its
#      losses match the CPU run's (relative 1e-5: CUDA's kernels sum in other orders; the engine
#      parity tests state per-operation bounds);
#   2. checkpoints across devices: the CPU trainer resumes the CUDA run's step-2 checkpoint and
#      the CUDA trainer the CPU run's; a resumed run with train_steps 2 stops right after loading,
#      so the model it saves is what it loaded: byte-identical to `dstrain export` of the other
#      device's checkpoint. Resumed to step 4, each matches the run it continues (1e-5);
#   3. two ranks, bf16, ZeRO-2, `launch` of a job with job.device "cuda": the group goes through
#      host memory over Gloo (the simulator has no NCCL), losses match the CPU's launch (2e-3,
#      bf16 products rounded on either side in other orders); its step-2 checkpoint commits (the
#      checkpoint's agreement between ranks runs over the device's communicator);
#   4. a device budget too small for the model fails with the out-of-memory message;
#   5. activation_checkpointing.cpu_checkpointing on CUDA is refused, naming the key;
#   6. optimizer offload to host memory on the CUDA rank: the device run's losses and weights,
#      bitwise, with the state's bytes in host_mem_bytes;
#   7. job.device "cuda" where no GPU is visible (the real CLI on this machine): exit 2 at
#      validate, train and launch, naming the key.
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
cpu="$ws/client/cli/dstrain"
sim="$ws/client/cli/dstrain_cuda_sim"
compare=(/usr/bin/python3 "$ws/tests/integration/cuda_sim/compare_losses.py")
src="$ws/tests/integration/data_parallel/job.json"
out="$TEST_TMPDIR/cuda_sim"
mkdir -p "$out"

make_job() {  # name steps device checkpoint_dir [precision stage]
  /usr/bin/python3 - "$src" "$out/$1.json" "$2" "$3" "$4" "${5:-fp32}" "${6:-0}" <<'PY'
import json, os, sys
src, dst, steps, device, ckpt, precision, stage = sys.argv[1:8]
j = json.load(open(src))
j["data"]["train"] = os.path.join(os.path.dirname(os.path.abspath(src)), j["data"]["train"])
j["job"].update({"train_steps": int(steps), "device": device})
if ckpt:
    j["job"].update({"checkpoint_every": 2, "checkpoint_dir": ckpt})
j["zero_optimization"] = {"stage": int(stage)}
if precision == "bf16":
    j["bf16"] = {"enabled": True}
json.dump(j, open(dst, "w"))
PY
}

train() {  # binary job metrics model
  "$1" train "$2" --threads 1 --metrics-out "$3" --save-model "$4" > "$3.log" 2>&1 ||
    { cat "$3.log"; return 1; }
}

# 1. One rank on CUDA against the CPU.
make_job cpu 4 cpu "$out/ckpt_cpu"
make_job cuda 4 cuda "$out/ckpt_cuda"
train "$cpu" "$out/cpu.json" "$out/cpu.jsonl" "$out/cpu.bin"
train "$sim" "$out/cuda.json" "$out/cuda.jsonl" "$out/cuda.bin"
grep -q '| cuda:0' "$out/cuda.jsonl.log"
grep -q '"device_mem_peak_bytes"' "$out/cuda.jsonl"
if grep -q '"device_mem_bytes"' "$out/cpu.jsonl"; then
  echo "the CPU run reports device memory"; exit 1
fi
"${compare[@]}" "$out/cuda.jsonl" "$out/cpu.jsonl" 1e-5

# 2. Each device resumes the other's checkpoint at step 2.
for pair in "cpu cuda $sim" "cuda cpu $cpu"; do
  read -r from to bin <<< "$pair"
  rm -rf "$out/resume_$to" && mkdir -p "$out/resume_$to"
  cp -r "$out/ckpt_$from/step_00000002" "$out/resume_$to/"
  echo step_00000002 > "$out/resume_$to/latest"
  "$cpu" export "$out/resume_$to" --out "$out/exported_$from.bin" > /dev/null
  make_job "load_$to" 2 "$to" "$out/resume_$to"
  train "$bin" "$out/load_$to.json" "$out/load_$to.jsonl" "$out/load_$to.bin"
  grep -q 'resumed from .* at step 2' "$out/load_$to.jsonl.log"
  cmp "$out/exported_$from.bin" "$out/load_$to.bin"
  make_job "resumed_$to" 4 "$to" "$out/resume_$to"
  train "$bin" "$out/resumed_$to.json" "$out/resumed_$to.jsonl" "$out/resumed_$to.bin"
  "${compare[@]}" "$out/resumed_$to.jsonl" "$out/$from.jsonl" 1e-5 3
done

# 3. Two ranks on CUDA, bf16, ZeRO-2, through host memory.
make_job cpu2 3 cpu "" bf16 2
make_job cuda2 3 cuda "$out/ckpt_cuda2" bf16 2
"$cpu" launch --nproc 2 "$out/cpu2.json" --metrics-out "$out/cpu2.jsonl" > "$out/cpu2.log" 2>&1 ||
  { cat "$out/cpu2.log"; exit 1; }
"$sim" launch --nproc 2 "$out/cuda2.json" --metrics-out "$out/cuda2.jsonl" > "$out/cuda2.log" 2>&1 ||
  { cat "$out/cuda2.log"; exit 1; }
grep -q 'joined the data-parallel group (cuda:0.*host-staged \(gloo\|shm\))' "$out/cuda2.log"
[[ -f "$out/ckpt_cuda2/step_00000002/manifest.json" ]] ||
  { echo "two CUDA ranks: no committed step-2 checkpoint"; ls -R "$out/ckpt_cuda2" || true; cat "$out/cuda2.log"; exit 1; }
"${compare[@]}" "$out/cuda2.jsonl" "$out/cpu2.jsonl" 2e-3

# 4. A budget too small for the model: the out-of-memory error names the category, the bytes asked,
#    what is in use and what `dstrain estimate` predicted; no crash.
rc=0
"$sim" train "$out/cuda.json" --device-memory-limit 1000000 > "$out/oom.log" 2>&1 || rc=$?
[[ $rc == 1 ]] || { echo "out of memory: exit $rc, want 1"; cat "$out/oom.log"; exit 1; }
grep -qE 'out of memory on cuda:0: allocating [0-9.]+ MB of [a-z_]+ exceeds the allocator.s budget of 1.0 MB; in use .*`dstrain estimate` predicted [0-9.]+ MB for this rank \(params' "$out/oom.log" ||
  { echo "out of memory message:"; cat "$out/oom.log"; exit 1; }

# 5. activation_checkpointing.cpu_checkpointing: a job.device auto job on a CUDA rank is refused
#    at start, naming the key (dstrain keeps checkpoints in device memory there).
make_job auto_cpu_ckpt 2 auto ""
/usr/bin/python3 - "$out/auto_cpu_ckpt.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
j["activation_checkpointing"] = {"cpu_checkpointing": True}
j["pipeline"] = {"activation_checkpoint_interval": 1}
json.dump(j, open(sys.argv[1], "w"))
PY
rc=0
"$sim" train "$out/auto_cpu_ckpt.json" --device cuda > "$out/cpu_ckpt.log" 2>&1 || rc=$?
[[ $rc != 0 ]] && grep -q 'activation_checkpointing.cpu_checkpointing: keeping activation checkpoints in host memory is not supported on CUDA devices yet' "$out/cpu_ckpt.log" ||
  { echo "cpu_checkpointing on CUDA: exit $rc"; cat "$out/cpu_ckpt.log"; exit 1; }

# 6. ZeRO-Offload through the CLI: offload_optimizer.device "cpu" on the CUDA rank, bf16 ZeRO-2,
#    takes the device run's losses bitwise (the CPU's AdamW matches the GPU kernel); the state is
#    in host memory (host_mem_bytes), none of it on the device.
make_job cuda_dev 3 cuda "" bf16 2
make_job cuda_host 3 cuda "" bf16 2
/usr/bin/python3 - "$out/cuda_host.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
j["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
json.dump(j, open(sys.argv[1], "w"))
PY
train "$sim" "$out/cuda_dev.json" "$out/cuda_dev.jsonl" "$out/cuda_dev.bin"
train "$sim" "$out/cuda_host.json" "$out/cuda_host.jsonl" "$out/cuda_host.bin"
grep -q 'offload: optimizer state in host memory' "$out/cuda_host.jsonl.log"
cmp "$out/cuda_dev.bin" "$out/cuda_host.bin"
/usr/bin/python3 - "$out/cuda_dev.jsonl" "$out/cuda_host.jsonl" <<'PY'
import json, sys
dev = [json.loads(l) for l in open(sys.argv[1])]
host = [json.loads(l) for l in open(sys.argv[2])]
assert [d["loss"] for d in dev] == [h["loss"] for h in host], (dev, host)
assert "host_mem_bytes" not in dev[-1], dev[-1]
assert host[-1]["mem_bytes"]["optimizer_state"] == 0, host[-1]
assert host[-1]["host_mem_bytes"]["optimizer_state"] == dev[-1]["mem_bytes"]["optimizer_state"], (
    dev[-1], host[-1])
PY

# 7. No GPU here: job.device "cuda" is refused with the key.
if [[ -e /dev/nvidia0 ]]; then
  echo "a GPU is visible: skipping the no-GPU checks"
else
  for cmd in "validate" "train" "launch --nproc 2"; do
    rc=0
    "$cpu" $cmd "$out/cuda.json" > /dev/null 2> "$out/refused.err" || rc=$?
    [[ $rc == 2 ]] || { echo "$cmd: exit $rc, want 2"; exit 1; }
    grep -q 'job.device: "cuda": no CUDA device visible' "$out/refused.err" ||
      { echo "$cmd:"; cat "$out/refused.err"; exit 1; }
  done
fi
echo PASS
