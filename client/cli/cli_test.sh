#!/usr/bin/env bash
# The CLI contract: exit codes (0 ok, 1 failed, 2 bad usage or invalid job) and error messages
# that name the key path or the file.
set -uo pipefail
dstrain="$TEST_SRCDIR/$TEST_WORKSPACE/client/cli/dstrain"
dir="$TEST_TMPDIR/cli"
mkdir -p "$dir"
fails=0
expect() {  # expect CODE PATTERN -- command...
  local code=$1 pattern=$2
  shift 3
  local out
  out=$("$@" 2>&1)
  local got=$?
  if [[ $got -ne $code ]] || ! grep -qE -- "$pattern" <<<"$out"; then
    echo "FAIL: $* -> exit $got (want $code), output:"
    echo "$out" | head -5
    fails=$((fails + 1))
  else
    echo "ok: $* -> $code"
  fi
}

cat > "$dir/good.json" <<'JSON'
{"train_batch_size": 8, "gradient_accumulation_steps": 2,
 "model": {"type": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 256, "block_size": 8},
 "data": {"train": "missing.txt"}, "job": {"train_steps": 1}}
JSON
sed 's/"gradient_accumulation_steps"/"grandient_accumulation_steps"/' "$dir/good.json" > "$dir/typo.json"
sed 's/"n_embd": 8/"n_embd": "8"/' "$dir/good.json" > "$dir/type.json"
sed 's/"train_batch_size": 8/"train_batch_size": 9/' "$dir/good.json" > "$dir/batch.json"
printf '{"train_batch_size": 8,' > "$dir/broken.json"

expect 0 '"train_micro_batch_size_per_gpu": 2' -- "$dstrain" validate --world 2 "$dir/good.json"
expect 0 '"gradient_clipping": 0.0' -- "$dstrain" validate "$dir/good.json"
expect 2 'grandient_accumulation_steps: unknown key.*did you mean' -- "$dstrain" validate "$dir/typo.json"
expect 2 'model.n_embd' -- "$dstrain" validate "$dir/type.json"
expect 2 'train_batch_size' -- "$dstrain" validate "$dir/batch.json"
expect 2 'broken.json' -- "$dstrain" validate "$dir/broken.json"
expect 2 'no such|cannot|not found|No such' -- "$dstrain" validate "$dir/nope.json"
expect 2 'unknown flag --wrold' -- "$dstrain" validate --wrold 2 "$dir/good.json"
expect 2 'unknown command' -- "$dstrain" frobnicate
expect 2 'usage' -- "$dstrain"
expect 0 'validate JOB.json' -- "$dstrain" help
expect 2 'missing.txt' -- "$dstrain" train "$dir/good.json"
expect 2 'missing.txt' -- "$dstrain" train "$dir/good.json" --device cpu
expect 2 'device cuda: this trainer does not train on CUDA yet' -- "$dstrain" train "$dir/good.json" --device cuda
expect 2 "expected cpu or cuda, got 'tpu'" -- "$dstrain" train "$dir/good.json" --device tpu
expect 2 'usage: dstrain prepare' -- "$dstrain" prepare --text x
expect 1 'nope.txt' -- "$dstrain" prepare --text "$dir/nope.txt" --out "$dir/out"
expect 0 'stage 0 +stage 1 +stage 2 +stage 3' -- "$dstrain" estimate --world 4 "$dir/good.json"
expect 0 'ZeRO paper' -- "$dstrain" estimate "$dir/good.json"
expect 2 'train_batch_size' -- "$dstrain" estimate "$dir/batch.json"
expect 2 'estimate takes exactly one JOB.json' -- "$dstrain" estimate
# Service commands, without a coordinator: usage errors (2) and an unreachable one (1).
expect 0 'submit JOB.json' -- "$dstrain" help
expect 2 'DSTRAIN_COORDINATOR' -- env -u DSTRAIN_COORDINATOR "$dstrain" status some-job
expect 2 'usage: dstrain status JOB' -- "$dstrain" status --coordinator 127.0.0.1:1
expect 2 'train_batch_size' -- "$dstrain" submit --coordinator 127.0.0.1:1 "$dir/batch.json"
# job.device is checked before anything is sent, and a good one gets as far as the coordinator.
sed 's/"train_steps": 1/"train_steps": 1, "device": "gpu"/' "$dir/good.json" > "$dir/gpu.json"
sed 's/"train_steps": 1/"train_steps": 1, "device": "cuda"/' "$dir/good.json" > "$dir/cuda.json"
expect 2 'job.device: must be "auto", "cpu" or "cuda", got "gpu"' -- "$dstrain" submit --coordinator 127.0.0.1:1 "$dir/gpu.json"
expect 1 'is dstrain-coordinator running at 127.0.0.1:1' -- "$dstrain" submit --coordinator 127.0.0.1:1 "$dir/cuda.json"
expect 1 'is dstrain-coordinator running at 127.0.0.1:1' -- "$dstrain" workers --coordinator 127.0.0.1:1
expect 1 'UNAVAILABLE' -- env DSTRAIN_COORDINATOR=127.0.0.1:1 "$dstrain" list
[[ $fails -eq 0 ]]
