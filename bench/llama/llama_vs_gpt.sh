#!/usr/bin/env bash
# The Llama decoder against the GPT at equal parameters and steps (a measurement, not a test),
# through the service: a local coordinator and two workers (deploy/local/up.sh), and each job
# `dstrain submit`ted there: deploy/local/demo's Tiny Shakespeare job (500 steps, 2 ranks, ZeRO-3,
# bf16, the same optimizer, schedule, batches and data); only the model block differs:
#   GPT   L4 H4 C256, vocab 256, block 256                         (3.29M parameters)
#   Llama L4 H4 KV2 C256 I768, vocab 256, untied head, no biases   (3.28M parameters)
# Prints each one's validation loss every 100 steps, its final one and its median tokens/s (the
# losses are deterministic; the speed depends on what else the machine runs).
# Usage: bench/llama/llama_vs_gpt.sh [STEPS] (default 500).
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-500}
source tools/bazel_flags.sh
bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //client/cli:dstrain \
  //coordinator/server:dstrain-coordinator //worker/agent:dstrain-worker >&2
bin=$(bazel info "${DSTRAIN_BAZEL_CONFIG[@]}" bazel-bin 2>/dev/null)
dstrain=$bin/client/cli/dstrain
work=$(mktemp -d)
trap 'deploy/local/down.sh "$work/svc" || true; rm -rf "$work"' EXIT
eval "$(DSTRAIN_BIN=$bin DSTRAIN_DATA_ROOT=$PWD deploy/local/up.sh 2 "$work/svc")"
demo=$PWD/deploy/local/demo
[[ -e $demo/data/train_000000.bin ]] ||
  "$dstrain" prepare --text "$demo/tinyshakespeare.txt" --out "$demo/data" >&2
for m in gpt llama; do
  python3 - "$demo/shakespeare-llama.json" "$work/$m.json" "$m" "$demo/data" "$steps" <<'PY'
import json, sys
src, dst, model, data, steps = sys.argv[1:]
j = json.load(open(src))
if model == "gpt":
    j["model"] = {"type": "gpt", "n_layer": 4, "n_head": 4, "n_embd": 256, "vocab_size": 256,
                  "block_size": 256}
j["data"] = {"train": data + "/train_*.bin", "val": data + "/val_*.bin", "seed": 1337}
j["job"].update(name=model, train_steps=int(steps), checkpoint_dir="", checkpoint_every=0)
j["job"].pop("sample_tokens", None)
j["scheduler"]["params"]["total_num_steps"] = int(steps)
j["scheduler"]["params"]["warmup_num_steps"] = min(50, max(2, int(steps) // 10))
json.dump(j, open(dst, "w"))
PY
  "$dstrain" submit "$work/$m.json" --id "bench-$m" > /dev/null
done
for m in gpt llama; do
  "$dstrain" watch "bench-$m" > /dev/null
  "$dstrain" logs "bench-$m" > "$work/$m.log"
done
echo "Tiny Shakespeare through dstrain submit, $steps steps, 2 ranks, ZeRO-3, bf16; $(nproc) cores," \
  "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1); $(date -u +%F)"
for m in gpt llama; do
  params=$(sed -n 's/.*| \([0-9.]*M\) parameters.*/\1/p' "$work/$m.log")
  vals=$(sed -n 's/.*step *\([0-9]*\)\/[0-9]* .*val loss \([0-9.]*\).*/\1:\2/p' "$work/$m.log" | tr '\n' ' ')
  done_line=$(grep -o 'done: .*' "$work/$m.log")
  echo "$m ($params): val loss by step $vals| $done_line"
done
