#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: installs what it needs (apt), builds dstrain,
# turns Tiny Shakespeare into token shards and trains the demo GPT (4 layers, 256 wide, byte-level
# vocabulary) on the CPU, printing progress and validation loss, then samples text from it.
# Writes: deploy/local/demo/data/ (shards), out/demo/metrics.jsonl, out/demo/model.bin.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install_deps.sh
source tools/bazel_flags.sh
bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //client/cli:dstrain
dstrain=bazel-bin/client/cli/dstrain

demo=deploy/local/demo
if ! ls "$demo"/data/train_*.bin >/dev/null 2>&1; then
  "$dstrain" prepare --text "$demo/tinyshakespeare.txt" --out "$demo/data"
fi
mkdir -p out/demo
"$dstrain" validate "$demo/shakespeare.json" >/dev/null
"$dstrain" train "$demo/shakespeare.json" --metrics-out out/demo/metrics.jsonl \
  --save-model out/demo/model.bin
echo "metrics: out/demo/metrics.jsonl   weights (llm.c format): out/demo/model.bin"
