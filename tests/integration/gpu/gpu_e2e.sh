#!/usr/bin/env bash
# End-to-end training on a GPU, against the CPU trainer on the same machine: what a lent GPU box
# runs from the tools/gpu_pack.sh pack (its run.sh calls this), and CI runs with --smoke on the
# CUDA runtime simulator so the script itself stays working.
#
#   gpu_e2e.sh [--smoke] GPU_DSTRAIN CPU_DSTRAIN TEXT DEMO_JOB
#
# GPU_DSTRAIN trains with --device cuda (the real CLI there; dstrain_cuda_sim in CI), CPU_DSTRAIN
# with --device cpu; TEXT is Tiny Shakespeare, DEMO_JOB deploy/local/demo/shakespeare.json.
# Checks, each printed as "ok"/"FAIL" with its figures:
#   demo      the demo model, 300 steps, on the GPU and on the CPU: validation losses within
#             DEMO_MARGIN (0.05 nats; docs/gpu.md says where the margin comes from)
#   resume    on the GPU, 20 steps straight and 10 + 10 resumed from the step-10 checkpoint: every
#             step's loss and gradient norm, and the final model, equal bit for bit
#   parity    a small model, ZeRO stages 0-3 x fp32/bf16, one rank and two ranks on this one GPU
#             (`launch`: their group goes through host memory over Gloo, since NCCL refuses two
#             ranks on one device), 5 steps against the CPU's losses: relative 1e-4 (fp32),
#             1e-2 (bf16)
#   oom       the demo model under a 20 MB device budget (1 MB with --smoke): the out-of-memory error naming the
#             category, what is in use and what `dstrain estimate` predicted; exit 1, no crash
# --smoke: a 2-layer 64-wide model and a handful of steps everywhere, stages 0 and 3 only.
set -uo pipefail
smoke=0
if [[ "${1:-}" == "--smoke" ]]; then smoke=1; shift; fi
if [[ $# -ne 4 ]]; then
  echo "usage: gpu_e2e.sh [--smoke] GPU_DSTRAIN CPU_DSTRAIN TEXT DEMO_JOB" >&2
  exit 2
fi
gpu=$1 cpu=$2 text=$3 demo=$4
python=${PYTHON:-python3}
work=${TEST_TMPDIR:-${TMPDIR:-/tmp}}/dstrain_gpu_e2e
rm -rf "$work" && mkdir -p "$work"
passed=0 failed=0
report() {  # ok|FAIL name details
  echo "gpu e2e: $1 $2: $3"
  if [[ $1 == ok ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

"$cpu" prepare --text "$text" --out "$work/data" > /dev/null || { echo "prepare failed"; exit 1; }

# job NAME KEY=VALUE...: the demo job with its data here and the given overrides (dotted keys,
# JSON values), into $work/NAME.json.
job() {
  local name=$1; shift
  "$python" - "$demo" "$work/$name.json" "$work/data" "$smoke" "$@" <<'PY'
import json, sys
src, dst, data, smoke = sys.argv[1:5]
j = json.load(open(src))
j["data"]["train"] = data + "/train_*.bin"
j["data"]["val"] = data + "/val_*.bin"
j["job"]["sample_tokens"] = 0
if smoke == "1":
    j["model"].update({"n_layer": 2, "n_embd": 64, "block_size": 32})
    j["train_micro_batch_size_per_gpu"] = 4
    j["job"]["eval_batches"] = 2
for kv in sys.argv[5:]:
    key, value = kv.split("=", 1)
    node = j
    *path, last = key.split(".")
    for p in path:
        node = node.setdefault(p, {})
    node[last] = json.loads(value)
json.dump(j, open(dst, "w"))
PY
}

# run BINARY NAME [ARGS...]: `BINARY train` of $work/NAME.json (or, with --nproc N first in ARGS,
# `launch`), metrics in $work/NAME.jsonl, log in $work/NAME.log; the exit status.
run() {
  local bin=$1 name=$2; shift 2
  if [[ "${1:-}" == "--nproc" ]]; then
    "$bin" launch "$@" "$work/$name.json" --metrics-out "$work/$name.jsonl" > "$work/$name.log" 2>&1
  else
    "$bin" train "$work/$name.json" "$@" --metrics-out "$work/$name.jsonl" > "$work/$name.log" 2>&1
  fi
}

field() {  # FILE KEY: the last metrics line's KEY
  "$python" -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1])][-1][sys.argv[2]])' "$1" "$2"
}

# --- demo: 300 steps on the GPU and on the CPU.
steps=300
[[ $smoke == 1 ]] && steps=4
job demo_gpu "job.train_steps=$steps" "job.eval_every=$steps" 'job.device="cuda"'
job demo_cpu "job.train_steps=$steps" "job.eval_every=$steps" 'job.device="cpu"'
if run "$gpu" demo_gpu && run "$cpu" demo_cpu; then
  g=$(field "$work/demo_gpu.jsonl" val_loss) c=$(field "$work/demo_cpu.jsonl" val_loss)
  gt=$(field "$work/demo_gpu.jsonl" tokens_per_s) ct=$(field "$work/demo_cpu.jsonl" tokens_per_s)
  if "$python" -c "import sys; sys.exit(abs($g - $c) > ${DEMO_MARGIN:-0.05})"; then
    report ok demo "val loss GPU $g, CPU $c after $steps steps (margin ${DEMO_MARGIN:-0.05}); last step $gt tok/s on the GPU, $ct on the CPU"
  else
    report FAIL demo "val loss GPU $g, CPU $c after $steps steps: beyond ${DEMO_MARGIN:-0.05}"
  fi
else
  report FAIL demo "a run failed: $(tail -2 "$work"/demo_*.log | tr '\n' ' ')"
fi

# --- resume: bit for bit on the GPU.
total=20 half=10
[[ $smoke == 1 ]] && total=4 half=2
job straight "job.train_steps=$total" 'job.device="cuda"' "job.eval_every=0" \
  "job.checkpoint_dir=\"$work/ckpt_straight\"" "job.checkpoint_every=$half"
job first "job.train_steps=$half" 'job.device="cuda"' "job.eval_every=0" \
  "job.checkpoint_dir=\"$work/ckpt_resumed\"" "job.checkpoint_every=$half"
job second "job.train_steps=$total" 'job.device="cuda"' "job.eval_every=0" \
  "job.checkpoint_dir=\"$work/ckpt_resumed\"" "job.checkpoint_every=$half"
if run "$gpu" straight --save-model "$work/straight.bin" && run "$gpu" first &&
  run "$gpu" second --save-model "$work/second.bin"; then
  if "$python" - "$work/straight.jsonl" "$work/first.jsonl" "$work/second.jsonl" <<'PY'
import json, sys
rows = lambda p: {j["step"]: (j["loss"], j["grad_norm"]) for j in map(json.loads, open(p))}
a, b = rows(sys.argv[1]), {**rows(sys.argv[2]), **rows(sys.argv[3])}
sys.exit(a != b)
PY
  then
    if cmp -s "$work/straight.bin" "$work/second.bin"; then
      report ok resume "steps 1-$total straight and $half+$((total - half)) resumed: losses, norms and final model identical"
    else
      report FAIL resume "final models differ"
    fi
  else
    report FAIL resume "per-step losses or norms differ"
  fi
else
  report FAIL resume "a run failed: $(tail -2 "$work"/straight.log "$work"/first.log "$work"/second.log | tr '\n' ' ')"
fi

# --- parity: stages x precisions x {1, 2 ranks}, GPU against CPU.
stages="0 1 2 3"
[[ $smoke == 1 ]] && stages="0 3"
for stage in $stages; do
  for precision in fp32 bf16; do
    for ranks in 1 2; do
      name=p_${stage}_${precision}_${ranks}
      extra=()
      [[ $precision == bf16 ]] && extra=('bf16.enabled=true')
      tol=1e-4
      [[ $precision == bf16 ]] && tol=1e-2
      common=("job.train_steps=5" "job.eval_every=0" "zero_optimization.stage=$stage"
        'model.n_layer=2' 'model.n_embd=64' 'model.block_size=32' 'train_micro_batch_size_per_gpu=4'
        "${extra[@]}")
      job "${name}_gpu" "${common[@]}" 'job.device="cuda"'
      job "${name}_cpu" "${common[@]}" 'job.device="cpu"'
      launch=()
      [[ $ranks == 2 ]] && launch=(--nproc 2)
      if run "$gpu" "${name}_gpu" "${launch[@]}" && run "$cpu" "${name}_cpu" "${launch[@]}"; then
        if d=$("$python" - "$work/${name}_gpu.jsonl" "$work/${name}_cpu.jsonl" "$tol" <<'PY'
import json, sys
g = [json.loads(l)["loss"] for l in open(sys.argv[1])]
c = [json.loads(l)["loss"] for l in open(sys.argv[2])]
worst = max(abs(x - y) / abs(y) for x, y in zip(g, c)) if len(g) == len(c) == 5 else float("inf")
print(f"{worst:.1e}")
sys.exit(worst > float(sys.argv[3]))
PY
        ); then
          report ok "parity stage $stage $precision x$ranks" "worst relative loss difference $d (<= $tol)"
        else
          report FAIL "parity stage $stage $precision x$ranks" "worst relative loss difference $d (> $tol)"
        fi
      else
        report FAIL "parity stage $stage $precision x$ranks" "a run failed: $(tail -2 "$work/${name}"_*.log | tr '\n' ' ')"
      fi
    done
  done
done

# --- oom: a budget the demo model cannot fit.
budget=20000000
[[ $smoke == 1 ]] && budget=1000000
job oom 'job.train_steps=2' 'job.device="cuda"'
rc=0
run "$gpu" oom --device-memory-limit "$budget" || rc=$?
if [[ $rc == 1 ]] && grep -qE "out of memory on cuda:0: allocating .* exceeds the allocator.s budget of $((budget / 1000000)).0 MB; in use .*\`dstrain estimate\` predicted" "$work/oom.log"; then
  report ok oom "$(grep -o 'out of memory.*' "$work/oom.log" | cut -c1-160)..."
else
  report FAIL oom "exit $rc: $(tail -2 "$work/oom.log" | tr '\n' ' ')"
fi

echo "gpu e2e: $passed passed, $failed failed"
[[ $failed == 0 ]]
