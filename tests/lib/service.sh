# Shell helpers for tests that run the service with real processes on 127.0.0.1: a
# dstrain-coordinator, dstrain-worker agents spawning real trainers, and the dstrain CLI.
# Source after setting `out` (a fresh directory); uses the runfiles of //tests/lib:service.
# Everything runs as deploy/local does by default: TLS with a throwaway CA, workers proving who
# they are with their certificates, the CLI with an admin token, trainers confined to $out
# (--data-root; the job's data is copied there).
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
dstrain="$ws/client/cli/dstrain"
coordinator="$ws/coordinator/server/dstrain-coordinator"
worker="$ws/worker/agent/dstrain-worker"
# The agent tests' stand-in trainer: it prints its --device and CUDA_VISIBLE_DEVICES and succeeds.
# Workers with --fake-gpus run it, since `dstrain train --device cuda` needs a GPU.
fake_trainer="$ws/worker/agent/fake_trainer.sh"
make_pki="$ws/deploy/local/make_pki.sh"
mkdir -p "$out/data"
cp "$ws/deploy/local/demo/tinyshakespeare.txt" "$out/data/"
text="$out/data/tinyshakespeare.txt"
py=/usr/bin/python3
pki="$out/pki"
"$make_pki" "$pki"
export DSTRAIN_TLS_CA="$pki/ca.pem"
DSTRAIN_TOKEN=$(cat "$pki/admin.token")
export DSTRAIN_TOKEN
unset DSTRAIN_INSECURE DSTRAIN_TOKEN_FILE DSTRAIN_TLS_CERT DSTRAIN_TLS_KEY

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  pkill -9 -f "$out/" 2>/dev/null || true  # trainers left by killed agents
  wait 2>/dev/null || true
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$out"/*.log; do echo "--- $f" >&2; tail -n 30 "$f" >&2; done
  exit 1
}

# Waits up to $2 seconds for a line matching $3 in file $1 and prints the first match.
await_line() {
  for _ in $(seq $(($2 * 10))); do
    if grep -m1 -o "$3" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  fail "no '$3' in $1 within $2 s"
}

coord_port=0
coord_starts=0
start_coordinator() {  # the first start picks a port, a restart takes the same one again
  coord_starts=$((coord_starts + 1))
  local log="$out/coordinator-$coord_starts.log"
  "$coordinator" --listen "127.0.0.1:$coord_port" --data-dir "$out/coord" \
    --metrics-listen 127.0.0.1:0 --tls-ca "$pki/ca.pem" --tls-cert "$pki/coordinator.pem" \
    --tls-key "$pki/coordinator.key" --tokens "$pki/tokens" "$@" > "$log" 2>&1 &
  coord_pid=$!
  pids+=("$coord_pid")
  local addr
  addr=$(await_line "$log" 10 "listening on 127.0.0.1:[0-9]*")
  export DSTRAIN_COORDINATOR=${addr#listening on }
  coord_port=${DSTRAIN_COORDINATOR##*:}
  coord_metrics=$(await_line "$log" 10 "http://127.0.0.1:[0-9]*/metrics")
}

declare -A worker_metrics worker_pid
start_worker() {  # id slots [extra flags, e.g. --fake-gpus NAME:BYTES,... --trainer PATH]
  local id=$1 slots=$2
  shift 2
  "$make_pki" "$pki" "$id"
  "$worker" --coordinator "$DSTRAIN_COORDINATOR" --slots "$slots" --work-dir "$out/work_$id" \
    --worker-id "$id" --trainer "$dstrain" --metrics-listen 127.0.0.1:0 --data-root "$out" \
    --tls-ca "$pki/ca.pem" --tls-cert "$pki/worker-$id.pem" --tls-key "$pki/worker-$id.key" "$@" \
    > "$out/worker_$id.log" 2>&1 &
  worker_pid[$id]=$!
  pids+=("$!")
  worker_metrics[$id]=$(await_line "$out/worker_$id.log" 10 "http://127.0.0.1:[0-9]*/metrics")
}

# A small GPT on Tiny Shakespeare (ZeRO-2).
#   make_job FILE WORLD STEPS [CKPT_DIR [JOB_EXTRA_JSON [TOP_EXTRA_JSON]]]
# checkpoints every 2 steps when CKPT_DIR is given; JOB_EXTRA_JSON is merged into "job",
# TOP_EXTRA_JSON into the top level (e.g. a bigger "model").
make_job() {
  $py - "$@" "$text" <<'PY'
import json, sys
args = sys.argv[1:-1]
path, world, steps = args[0], int(args[1]), int(args[2])
ckpt = args[3] if len(args) > 3 else ""
extra = json.loads(args[4]) if len(args) > 4 else {}
job = {
    "train_micro_batch_size_per_gpu": 2,
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
    "zero_optimization": {"stage": 2},
    "model": {"type": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "vocab_size": 256,
              "block_size": 32},
    "data": {"train": sys.argv[-1], "seq_len": 32},
    "job": {"name": "svc", "world_size": world, "train_steps": steps, "eval_every": 0},
}
if ckpt:
    job["job"].update(checkpoint_dir=ckpt, checkpoint_every=2, keep_last=5)
job["job"].update(extra)
job.update(json.loads(args[5]) if len(args) > 5 else {})
json.dump(job, open(path, "w"))
PY
}

job_field() {  # job python-expression-over-j (j = `dstrain status JOB -o json`)
  "$dstrain" status "$1" -o json | $py -c "import json,sys; j=json.load(sys.stdin); print($2)"
}

await_state() {  # job state seconds
  for _ in $(seq $(($3 * 10))); do
    [[ $(job_field "$1" "j['job']['state']") == "$2" ]] && return 0
    sleep 0.1
  done
  fail "job $1 not $2 within $3 s (is $(job_field "$1" "j['job']['state']"))"
}

await_step() {  # job step seconds: waits until the job's current step reaches STEP
  for _ in $(seq $(($3 * 20))); do
    [[ $(job_field "$1" "int(j['job'].get('current_step', 0))") -ge $2 ]] && return 0
    sleep 0.05
  done
  fail "job $1 did not reach step $2 within $3 s"
}

now() { $py -c "import time; print(time.time())"; }
