#!/usr/bin/env bash
# docs/migrating-from-deepspeed.md's example (docs/examples/deepspeed) does what the guide says:
# the guide shows the example's files, the job validates with ds_config.json merged in unchanged
# (the same configuration as the DeepSpeed keys written inline), and `validate`, `train`,
# `launch`, `export` and `submit` behave as the guide describes.
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
dstrain="$ws/client/cli/dstrain"
coordinator="$ws/coordinator/server/dstrain-coordinator"
guide="$ws/docs/migrating-from-deepspeed.md"
check=(/usr/bin/python3 "$ws/tests/docs/migration_example_check.py")
out="$TEST_TMPDIR/migration"
ex="$out/example"
mkdir -p "$ex"
cp "$ws"/docs/examples/deepspeed/{ds_config.json,job.json,train.py} "$ex/"
chmod u+w "$ex"/*

coord_pid=""
cleanup() { if [[ -n $coord_pid ]]; then kill "$coord_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_exit CODE STDERR_FILE COMMAND...: runs COMMAND, stdout to /dev/null.
expect_exit() {
  local want=$1 err=$2 got=0
  shift 2
  "$@" > /dev/null 2> "$err" || got=$?
  [[ $got == "$want" ]] || { cat "$err" >&2; fail "$* exited $got, expected $want"; }
}

echo "== the guide's blocks are the example's files"
"${check[@]}" blocks "$guide" "$ex"
/usr/bin/python3 -m py_compile "$ex/train.py"

echo "== validate: ds_config.json merged unchanged, the notes the guide shows"
"$dstrain" validate "$ex/job.json" > "$out/effective.json" 2> "$out/validate.err"
"${check[@]}" validated "$guide" "$out/effective.json" "$out/validate.err"
"${check[@]}" batch "$out/effective.json" 32 4 4

echo "== the same DeepSpeed keys written inline give the same configuration"
"${check[@]}" inline "$ex/job.json" "$ex/job_inline.json"
"$dstrain" validate "$ex/job_inline.json" > "$out/effective_inline.json" 2> /dev/null
"${check[@]}" same "$out/effective.json" "$out/effective_inline.json"

echo "== batch size: all three keys fix the data-parallel size at 2"
for world in 1 4; do
  expect_exit 2 "$out/world$world.err" "$dstrain" validate --world "$world" "$ex/job.json"
  msg="dstrain: train_batch_size: 32 != train_micro_batch_size_per_gpu 4 * gradient_accumulation_steps 4 * data-parallel size $world (from deepspeed_config "
  grep -qxF "$msg\"$ex/ds_config.json\")" "$out/world$world.err" \
    || { cat "$out/world$world.err" >&2; fail "not: $msg"; }
done
# The guide shows the message of --world 4 with the path shortened.
grep -qxF "$msg\".../ds_config.json\")" "$guide" || fail "the guide does not show: $msg"
# Without gradient_accumulation_steps the accumulation follows the world size: 32 / 4 / N.
mkdir -p "$out/nogas"
"${check[@]}" without_gas "$ex/ds_config.json" "$out/nogas/ds_config.json"
cp "$ex/job.json" "$out/nogas/job.json"
for world in 1 2 4 8; do
  "$dstrain" validate --world "$world" "$out/nogas/job.json" > "$out/nogas/effective.json" \
    2> /dev/null
  "${check[@]}" batch "$out/nogas/effective.json" 32 4 $((32 / 4 / world))
done

echo "== dstrain train refuses the 2-rank job and points to launch"
"$dstrain" prepare --text "$ws/deploy/local/demo/tinyshakespeare.txt" --out "$ex/data" > /dev/null
expect_exit 2 "$out/train.err" "$dstrain" train "$ex/job.json"
grep -qF 'dstrain launch --nproc 2' "$out/train.err" || { cat "$out/train.err" >&2; fail "train"; }

echo "== dstrain launch --nproc 2 (4 steps), checkpoints, export"
run="$out/run"
mkdir -p "$run"
cp "$ex/ds_config.json" "$ex/job.json" "$run/"
ln -s "$ex/data" "$run/data"
"${check[@]}" shorten "$run/job.json"
"$dstrain" launch --nproc 2 "$run/job.json" --metrics-out "$run/metrics.jsonl" \
  > "$run/launch.log" 2>&1 || { cat "$run/launch.log" >&2; fail "launch"; }
cat "$run/launch.log"
"${check[@]}" metrics "$run/metrics.jsonl" 4
grep -q '^\[rank 0\] checkpoint .*/step_00000004$' "$run/launch.log" || fail "no checkpoint line"
[[ $(cat "$run/checkpoints/latest") == step_00000004 ]] || fail "latest is not step_00000004"
[[ -f $run/checkpoints/step_00000002/manifest.json ]] || fail "no step_00000002"
"$dstrain" export "$run/checkpoints" --out "$run/model.bin"
"${check[@]}" model "$run/model.bin"

echo "== dstrain submit stores the configuration validate printed"
"$coordinator" --listen 127.0.0.1:0 --data-dir "$out/coord" --insecure > "$out/coord.log" 2>&1 &
coord_pid=$!
for _ in $(seq 100); do
  addr=$(grep -m1 -o 'listening on 127.0.0.1:[0-9]*' "$out/coord.log" || true)
  [[ -n $addr ]] && break
  sleep 0.1
done
[[ -n $addr ]] || { cat "$out/coord.log" >&2; fail "the coordinator did not start"; }
export DSTRAIN_COORDINATOR=${addr#listening on } DSTRAIN_INSECURE=1
unset DSTRAIN_TLS_CA DSTRAIN_TOKEN DSTRAIN_TOKEN_FILE
id=$("$dstrain" submit "$ex/job.json" --id migration-example 2> "$out/submit.err")
[[ $id == migration-example ]] || { cat "$out/submit.err" >&2; fail "submit printed '$id'"; }
# submit prints the same notes as validate.
cmp "$out/submit.err" "$out/validate.err" || fail "submit's notes differ from validate's"
"$dstrain" status migration-example -o json > "$out/status.json"
"${check[@]}" stored "$out/status.json" "$out/effective.json"
echo "PASS"
