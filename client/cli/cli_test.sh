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
expect 2 "--device cuda: no CUDA device visible" -- "$dstrain" train "$dir/good.json" --device cuda
expect 2 "expected cpu or cuda, got 'tpu'" -- "$dstrain" train "$dir/good.json" --device tpu
expect 2 'usage: dstrain prepare' -- "$dstrain" prepare --text x
expect 1 'nope.txt' -- "$dstrain" prepare --text "$dir/nope.txt" --out "$dir/out"
# --data-root (what the worker agent passes): every path the job names must resolve beneath it,
# symlinks followed, before anything is opened. A data file reached through a link that leads
# out of the root is refused naming the key; the same file inside the root is found.
mkdir -p "$dir/root/data" "$dir/elsewhere"
printf 'hello world, hello dstrain\n%.0s' {1..200} > "$dir/elsewhere/secret.txt"
cp "$dir/elsewhere/secret.txt" "$dir/root/data/train.txt"
ln -sfn "$dir/elsewhere" "$dir/root/escape"
sed "s|\"missing.txt\"|\"$dir/root/escape/secret.txt\"|" "$dir/good.json" > "$dir/escape.json"
sed "s|\"missing.txt\"|\"$dir/root/data/train.txt\"|" "$dir/good.json" > "$dir/inside.json"
expect 2 'data.train: .*resolves to .*elsewhere/secret.txt.*outside the data root' -- \
  "$dstrain" train "$dir/escape.json" --data-root "$dir/root"
expect 0 'done: 1 steps' -- "$dstrain" train "$dir/inside.json" --data-root "$dir/root" --threads 1
expect 0 'stage 0 +stage 1 +stage 2 +stage 3' -- "$dstrain" estimate --world 4 "$dir/good.json"
expect 0 'ZeRO paper' -- "$dstrain" estimate "$dir/good.json"
expect 2 'train_batch_size' -- "$dstrain" estimate "$dir/batch.json"
expect 2 'estimate takes exactly one JOB.json' -- "$dstrain" estimate
# The device the ranks are sized for: a GPU rank without a GPU here (CudaSizing), or a CPU rank.
expect 0 'sized for a GPU rank \(--device' -- "$dstrain" estimate --device cuda "$dir/good.json"
expect 0 'sized for a CPU rank \(--device' -- "$dstrain" estimate --device cpu "$dir/good.json"
expect 2 '--device: "tpu": expected "cpu" or "cuda"' -- "$dstrain" estimate --device tpu "$dir/good.json"
sed 's/"gradient_accumulation_steps": 2,/"gradient_accumulation_steps": 2, "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}},/' \
  "$dir/good.json" > "$dir/offload.json"
# Host offload on a GPU rank takes the optimizer state off the device into host memory; on a CPU
# rank it is in host memory already and nothing moves.
offload_check='import json, sys
e = json.load(sys.stdin)
cpu, none = e["offload_optimizer"]["cpu"], e["offload_optimizer"]["none"]
if e["device"] == "cuda":
    ok = cpu["optimizer_state_bytes"] == 0 and cpu["host_bytes"] >= none["optimizer_state_bytes"] > 0
else:
    ok = cpu["host_bytes"] == 0 and cpu["optimizer_state_bytes"] == none["optimizer_state_bytes"] > 0
print("offload figures", "ok" if ok else "wrong", e["device"], cpu, none)'
expect 0 'offload figures ok cuda' -- bash -c "\"$dstrain\" estimate --device cuda --json \"$dir/offload.json\" | python3 -c '$offload_check'"
expect 0 'offload figures ok cpu' -- bash -c "\"$dstrain\" estimate --device cpu --json \"$dir/offload.json\" | python3 -c '$offload_check'"
# Keys without effect: one "note:" line per key the job sets, on stderr (validate's stdout stays
# the effective configuration, whose notes hold the same text); keys that act are not named.
sed 's/"train_batch_size": 8,/"train_batch_size": 8, "zero_optimization": {"stage": 1, "contiguous_gradients": true, "reduce_scatter": true}, "fp16": {"auto_cast": false},/' \
  "$dir/good.json" > "$dir/noted.json"
check() {  # check DESCRIPTION CONDITION...
  local what=$1
  shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}
# A checkpoint_dir outside the root is refused before anything is written or deleted there (the
# retention would remove *.tmp entries of a failed save).
mkdir -p "$dir/elsewhere/ckpt/step_00000001.tmp"
sed 's|"train_steps": 1}|"train_steps": 1, "checkpoint_dir": "'"$dir"'/elsewhere/ckpt", "checkpoint_every": 1, "keep_last": 1}|' \
  "$dir/inside.json" > "$dir/ckpt_out.json"
expect 2 'job.checkpoint_dir: .*outside the data root' -- \
  "$dstrain" train "$dir/ckpt_out.json" --data-root "$dir/root" --threads 1
check "a refused job leaves the checkpoint_dir outside the root alone" \
  [ -d "$dir/elsewhere/ckpt/step_00000001.tmp" ]
# Under an agent (--job-id) there is always a root: none confines nothing, so it is refused.
expect 1 '--job-id without --data-root' -- "$dstrain" train "$dir/inside.json" --job-id j --threads 1
notes_of() {  # the note lines of a file, without the reasons
  sed -n 's/^\(note: [a-z0-9_.]*: no effect in dstrain: \).*/\1/p' "$1"
}
want_notes=$'note: fp16.auto_cast: no effect in dstrain: \nnote: zero_optimization.contiguous_gradients: no effect in dstrain: '
"$dstrain" validate "$dir/noted.json" > "$dir/noted.out" 2> "$dir/noted.err"
check "validate exits 0 with notes" [ $? -eq 0 ]
check "validate notes on stderr" [ "$(notes_of "$dir/noted.err")" == "$want_notes" ]
check "validate stderr holds only the notes" [ "$(wc -l < "$dir/noted.err")" -eq 2 ]
check "validate stdout is the JSON" [ "$(head -c 1 "$dir/noted.out")" == "{" ]
check "validate stdout has no note lines" [ -z "$(notes_of "$dir/noted.out")" ]
check "effective notes" grep -q '"zero_optimization.contiguous_gradients: no effect in dstrain: ' "$dir/noted.out"
"$dstrain" validate "$dir/noted.out" > /dev/null 2> "$dir/again.err"
check "the effective configuration gives the same notes" [ "$(notes_of "$dir/again.err")" == "$want_notes" ]
"$dstrain" validate "$dir/good.json" > /dev/null 2> "$dir/good.err"
check "no notes for a job that sets no such key" [ ! -s "$dir/good.err" ]
"$dstrain" train "$dir/noted.json" > "$dir/train.out" 2> "$dir/train.err"
check "train exits 2 on the missing data" [ $? -eq 2 ]
check "train notes on stderr" [ "$(notes_of "$dir/train.err")" == "$want_notes" ]
"$dstrain" launch --nproc 1 "$dir/noted.json" > "$dir/launch.out" 2>&1
check "launch fails on the missing data" [ $? -ne 0 ]
check "launch notes unprefixed" [ "$(notes_of "$dir/launch.out")" == "$want_notes" ]
check "launch notes once, not again per rank" [ "$(grep -c 'note: ' "$dir/launch.out")" -eq 2 ]
check "launch says why the rank failed" grep -q 'missing.txt' "$dir/launch.out"
# Service commands, without a coordinator: usage errors (2) and an unreachable one (1).
expect 0 'submit JOB.json' -- "$dstrain" help
expect 2 'DSTRAIN_COORDINATOR' -- env -u DSTRAIN_COORDINATOR "$dstrain" status some-job
expect 2 'usage: dstrain status JOB' -- "$dstrain" status --coordinator 127.0.0.1:1
expect 2 'train_batch_size' -- "$dstrain" submit --coordinator 127.0.0.1:1 "$dir/batch.json"
"$dstrain" submit --coordinator 127.0.0.1:1 "$dir/noted.json" > /dev/null 2> "$dir/submit.err"
check "submit notes on stderr before it sends" [ "$(notes_of "$dir/submit.err")" == "$want_notes" ]
# job.device is checked before anything is sent, and a good one gets as far as the coordinator.
sed 's/"train_steps": 1/"train_steps": 1, "device": "gpu"/' "$dir/good.json" > "$dir/gpu.json"
sed 's/"train_steps": 1/"train_steps": 1, "device": "cuda"/' "$dir/good.json" > "$dir/cuda.json"
expect 2 'job.device: must be "auto", "cpu" or "cuda", got "gpu"' -- "$dstrain" submit --coordinator 127.0.0.1:1 "$dir/gpu.json"
expect 1 'is dstrain-coordinator running at 127.0.0.1:1' -- "$dstrain" submit --coordinator 127.0.0.1:1 "$dir/cuda.json"
expect 1 'is dstrain-coordinator running at 127.0.0.1:1' -- "$dstrain" workers --coordinator 127.0.0.1:1
expect 1 'UNAVAILABLE' -- env DSTRAIN_COORDINATOR=127.0.0.1:1 "$dstrain" list
# dstrain token: a fresh token on stdout, its SHA-256 hash with the principal and roles appended
# to a 0600 file; nothing else keeps the token.
tokens="$dir/tokens"
rm -f "$tokens"
t1=$("$dstrain" token alice submitter --append "$tokens")
check "token: 32 random bytes in hex" grep -qE '^dst_[0-9a-f]{64}$' <<<"$t1"
t2=$("$dstrain" token ops viewer,admin --append "$tokens" 2>/dev/null)
check "token: two tokens differ" [ "$t1" != "$t2" ]
check "token: the file line is the hash" [ "$(sed -n 1p "$tokens")" == "$(printf %s "$t1" | sha256sum | cut -d' ' -f1) alice submitter" ]
check "token: roles in order" [ "$(sed -n 2p "$tokens" | cut -d' ' -f2-)" == "ops viewer,admin" ]
check "token: the file is private" [ "$(stat -c %a "$tokens")" == 600 ]
check "token: the token is not in the file" bash -c "! grep -q '$t1' '$tokens'"
expect 0 'the line for the coordinator' -- "$dstrain" token bob submitter
expect 2 "principal 'Bob'" -- "$dstrain" token Bob submitter
expect 2 "unknown role 'owner'" -- "$dstrain" token bob owner
expect 2 'usage: dstrain token' -- "$dstrain" token bob
# Shards made with a BPE tokenizer (2048 tokens, tests/tokenizer): a model with a smaller
# vocabulary is refused before training, naming the key and the tokenizer's record; the export's
# format is checked by name.
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
head -c 20000 "$ws/deploy/local/demo/tinyshakespeare.txt" > "$dir/bpe.txt"
expect 0 'tokenizer' -- "$dstrain" prepare --text "$dir/bpe.txt" --out "$dir/bpe" \
  --tokenizer "$ws/tests/tokenizer/tokenizer.json" --val-fraction 0.1
cat > "$dir/bpe.json" <<'JSON'
{"train_batch_size": 2,
 "model": {"type": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 1024, "block_size": 8},
 "data": {"train": "bpe/train_*.bin"}, "job": {"train_steps": 1}}
JSON
expect 2 'model.vocab_size: 1024 is smaller than the vocabulary of the tokenizer that made data.train \(2048 tokens, .*bpe/tokenizer.txt\)' -- "$dstrain" train "$dir/bpe.json"
sed 's/"vocab_size": 1024/"vocab_size": 2048/' "$dir/bpe.json" > "$dir/bpe_ok.json"
expect 0 'done: 1 steps' -- "$dstrain" train "$dir/bpe_ok.json"
expect 2 '--format: expected "llmc" or "safetensors", got "onnx"' -- "$dstrain" export "$dir" --out "$dir/m" --format onnx
# A TLS file that is not there is a usage error naming it.
expect 2 'nope.pem' -- "$dstrain" workers --coordinator 127.0.0.1:1 --tls-ca "$dir/nope.pem"
[[ $fails -eq 0 ]]
