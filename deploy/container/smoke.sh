#!/bin/sh
# Runs inside the image (build-offline.sh --smoke): the service as the pods run it, on loopback.
# A TLS coordinator and a two-slot worker agent, dstrain-health-probe against both, then a tiny
# 2-rank ZeRO-2 job submitted with the CLI, trained by the image's own trainer (`dstrain train`
# started by the agent, Gloo between the ranks), checkpointed to /data and followed to the end.
# Expects /pki (deploy/local/make_pki.sh DIR smoke-1, readable by this user) and a writable /data
# holding tinyshakespeare.txt. Exit 0 when the job SUCCEEDED and its checkpoint is committed.
set -eu
tmp=$(mktemp -d)
pids=""
stop() {
  for p in $pids; do kill "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
}
trap stop EXIT
await() {  # FILE PATTERN
  i=0
  while [ $i -lt 100 ]; do
    if line=$(grep -m1 -o "$2" "$1" 2> /dev/null); then echo "$line"; return 0; fi
    sleep 0.1
    i=$((i + 1))
  done
  echo "smoke: no '$2' in $1:" >&2
  cat "$1" >&2
  exit 1
}

dstrain-coordinator --listen 127.0.0.1:0 --data-dir "$tmp/coordinator" \
  --metrics-listen 127.0.0.1:0 --data-root /data --tls-ca /pki/ca.pem \
  --tls-cert /pki/coordinator.pem --tls-key /pki/coordinator.key --tokens /pki/tokens \
  > "$tmp/coordinator.log" 2>&1 &
pids="$pids $!"
coordinator=$(await "$tmp/coordinator.log" "listening on 127.0.0.1:[0-9]*")
coordinator=${coordinator#listening on }
dstrain-health-probe --addr "$coordinator" --tls-ca /pki/ca.pem

dstrain-worker --coordinator "$coordinator" --slots 2 --gpus none --work-dir "$tmp/work" \
  --data-root /data --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --tls-ca /pki/ca.pem --tls-cert /pki/worker-smoke-1.pem --tls-key /pki/worker-smoke-1.key \
  > "$tmp/worker.log" 2>&1 &
pids="$pids $!"
health=$(await "$tmp/worker.log" "health on 127.0.0.1:[0-9]*")
health=${health#health on }
i=0
until dstrain-health-probe --addr "$health" --tls-ca /pki/ca.pem --service readiness; do
  i=$((i + 1))
  if [ $i -ge 50 ]; then cat "$tmp/worker.log" >&2; exit 1; fi
  sleep 0.2
done

export DSTRAIN_COORDINATOR="$coordinator" DSTRAIN_TLS_CA=/pki/ca.pem
export DSTRAIN_TOKEN_FILE=/pki/admin.token
dstrain workers
dstrain prepare --text /data/tinyshakespeare.txt --out /data/shakespeare
cat > /data/job.json << 'EOF'
{
  "train_micro_batch_size_per_gpu": 4,
  "gradient_accumulation_steps": 1,
  "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
  "steps_per_print": 1,
  "zero_optimization": {"stage": 2},
  "model": {"type": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 256,
            "block_size": 64},
  "data": {"train": "shakespeare/train_*.bin", "val": "shakespeare/val_*.bin", "seed": 1},
  "job": {"name": "smoke", "world_size": 2, "train_steps": 4, "eval_every": 4,
          "eval_batches": 2, "sample_tokens": 16, "checkpoint_dir": "ckpt",
          "checkpoint_every": 4}
}
EOF
dstrain submit /data/job.json --id smoke --follow
dstrain checkpoints smoke
dstrain logs smoke --tail 4
ls /data/ckpt
echo "smoke: the job trained in the image and its checkpoint is in /data/ckpt"
