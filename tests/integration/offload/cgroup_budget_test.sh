#!/usr/bin/env bash
# The memory-budget run of docs/offload.md under a real limit: a cgroup memory limit (v1
# memory.limit_in_bytes or v2 memory.max) set below what a job needs with its optimizer state in
# memory. The job is killed for memory without offload and trains to its last step with the state
# on NVMe (zero_optimization.offload_optimizer.device "nvme"); each run's peak resident memory
# (the cgroup's own high-water mark) is printed beside the limit. Runs outside Bazel's sandbox
# (tag "local"), which mounts the cgroup file system read-only; where no memory cgroup can be
# made (no controller, no permission), the test reports itself skipped through the JUnit XML.
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
dstrain="$ws/client/cli/dstrain"
text="$ws/deploy/local/demo/tinyshakespeare.txt"
out="$TEST_TMPDIR/budget"
nvme="$TEST_TMPDIR/nvme"
mkdir -p "$out" "$nvme"

source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/lib/skip.sh"
skip() { skip_test cgroup_budget_test cgroup_budget "$1"; }

# ---- a memory cgroup of our own, below the one this test runs in ----
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  version=2
  parent="/sys/fs/cgroup$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)"
  grep -qw memory "$parent/cgroup.subtree_control" 2>/dev/null ||
    echo +memory > "$parent/cgroup.subtree_control" 2>/dev/null || skip "no memory controller for child cgroups of $parent"
  limit_file=memory.max peak_file=memory.peak
elif [[ -d /sys/fs/cgroup/memory ]]; then
  version=1
  parent="/sys/fs/cgroup/memory$(awk -F: '$2 == "memory" {print $3}' /proc/self/cgroup)"
  limit_file=memory.limit_in_bytes peak_file=memory.max_usage_in_bytes
else
  skip "no memory cgroup hierarchy under /sys/fs/cgroup"
fi
groups=()
cleanup() {
  for g in "${groups[@]}"; do
    [[ -d "$g" ]] || continue
    while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done < "$g/cgroup.procs"
    sleep 0.2
    rmdir "$g" 2>/dev/null || true
  done
}
trap cleanup EXIT
new_group() {  # name limit_bytes|max -> path
  local g="$parent/dstrain-budget-$$-$1"
  mkdir "$g" 2>/dev/null || return 1
  groups+=("$g")
  if [[ "$2" != max ]]; then
    echo "$2" > "$g/$limit_file" || return 1
    # No swapping around the limit (v1 counts memory+swap separately).
    [[ $version == 2 ]] && echo 0 > "$g/memory.swap.max" 2>/dev/null || true
  fi
  echo "$g"
}
probe=$(new_group probe max) || skip "cannot create a memory cgroup under $parent (read-only or no permission)"
[[ -f "$probe/$peak_file" ]] || skip "$probe has no $peak_file (kernel too old)"

# ---- the job: its optimizer state (fp32 m and v, 8 bytes per parameter) a large share ----
make_job() {  # file offload(0|1)
  /usr/bin/python3 - "$text" "$1" "$2" "$nvme" <<'PY'
import json, sys
text, dst, offload, nvme = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
zero = {"stage": 1, "sub_group_size": 1 << 20}
if offload:
    zero["offload_optimizer"] = {"device": "nvme", "nvme_path": nvme, "buffer_count": 2,
                                 "pipeline_read": True, "pipeline_write": True}
json.dump({
    "train_batch_size": 2,
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
    "zero_optimization": zero,
    "model": {"type": "gpt", "n_layer": 6, "n_head": 8, "n_embd": 512, "vocab_size": 256,
              "block_size": 64, "init_seed": 1},
    "data": {"train": text, "seq_len": 64, "seed": 1},
    "job": {"name": "budget", "train_steps": 4, "eval_every": 0, "sample_tokens": 0},
}, open(dst, "w"))
PY
}
make_job "$out/memory.json" 0
make_job "$out/nvme.json" 1

run_in() {  # group job metrics -> exit status of the training
  local status=0
  (echo "$BASHPID" > "$1/cgroup.procs" &&
    exec "$dstrain" train "$2" --threads 2 --metrics-out "$3") > "$3.log" 2>&1 || status=$?
  return $status
}
steps() { [[ -f "$1" ]] && wc -l < "$1" || echo 0; }

# 1. Each job unlimited: its anonymous memory (sampled from its cgroup's memory.stat while it
# runs; the high-water mark also counts page cache, which varies with what was read before and is
# reclaimed under a limit) while it trains, and at any time. The limit lies halfway between what
# the job with its state in memory needs to train and what the offloaded job needs at most:
# anonymous memory cannot be reclaimed (no swap in the cgroup), so the first cannot fit.
anon_key=rss
[[ $version == 2 ]] && anon_key=anon
measure() {  # name job -> "peak_while_training peak"
  local g
  g=$(new_group "free-$1" max)
  (echo "$BASHPID" > "$g/cgroup.procs" &&
    exec "$dstrain" train "$2" --threads 2 --metrics-out "$out/m_free_$1.jsonl") \
    > "$out/m_free_$1.jsonl.log" 2>&1 &
  local trainer=$! training=0 peak=0 anon
  while kill -0 "$trainer" 2>/dev/null; do
    anon=$(awk -v k="$anon_key" '$1 == k {print $2}' "$g/memory.stat")
    ((anon > peak)) && peak=$anon
    [[ $(steps "$out/m_free_$1.jsonl") -lt 4 ]] && ((anon > training)) && training=$anon
    sleep 0.02
  done
  wait "$trainer"
  echo "$training $peak"
}
read -r memory_training memory_peak < <(measure memory "$out/memory.json")
read -r nvme_training nvme_peak < <(measure nvme "$out/nvme.json")
echo "unlimited, anonymous memory: state in memory ${memory_training} bytes while training" \
  "(${memory_peak} at most), on NVMe ${nvme_training} while training (${nvme_peak} at most)"
# Nothing after the last step needs more than the steps did: the run gathers no whole copy of the
# model unless it writes one (--save-model), so the limit below binds the training itself.
if ((nvme_peak - nvme_training > 8 << 20)); then
  echo "the offloaded job grew by $((nvme_peak - nvme_training)) bytes after its last step" >&2
  exit 1
fi
if ((memory_training - nvme_peak < 32 << 20)); then
  echo "offload saved too little to test under a limit" >&2
  exit 1
fi
limit=$(((memory_training + nvme_peak) / 2))
echo "limit set to ${limit}"

# 2. Under the limit, the state in memory: killed for memory before its last step.
tight=$(new_group tight "$limit")
if run_in "$tight" "$out/memory.json" "$out/m_tight.jsonl"; then
  echo "the job trained under a limit below its needs (peak $(cat "$tight/$peak_file"))" >&2
  exit 1
fi
oom_file=memory.oom_control
[[ $version == 2 ]] && oom_file=memory.events
grep -q "oom_kill [1-9]" "$tight/$oom_file" || {
  echo "the job failed, but not for memory:" >&2
  cat "$tight/$oom_file" "$out/m_tight.jsonl.log" >&2
  exit 1
}
# (It may get through some steps first: the sampled figures count transparent huge pages whole,
# which the kernel splits and trims under a limit, so the job's true need is somewhat lower.)
echo "in memory under the limit: killed for memory after $(steps "$out/m_tight.jsonl") of 4 steps"

# 3. Under the same limit, the state on NVMe: all four steps, the peak within the limit.
offloaded=$(new_group nvme "$limit")
run_in "$offloaded" "$out/nvme.json" "$out/m_nvme.jsonl" || {
  cat "$out/m_nvme.jsonl.log" >&2
  exit 1
}
[[ $(steps "$out/m_nvme.jsonl") -eq 4 ]]
peak_nvme=$(cat "$offloaded/$peak_file")
[[ $peak_nvme -le $limit ]]
grep -q "offload: optimizer state on NVMe" "$out/m_nvme.jsonl.log"
echo "nvme under the limit: 4 steps, peak ${peak_nvme} bytes (limit ${limit}, cgroup v${version})"
echo "cgroup_budget_test: passed"
