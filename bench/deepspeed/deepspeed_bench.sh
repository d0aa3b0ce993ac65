#!/usr/bin/env bash
# dstrain against DeepSpeed from PyPI (a benchmark, not a test): makes out/bench-venv with torch
# and deepspeed (CPU accelerator) once, builds dstrain, then runs deepspeed_bench.py, which
# alternates the two on the same GPT for world 1 and 2 x ZeRO 0-3 x fp32/bf16 and prints tokens/s,
# peak memory and ratios (its header says how). Arguments go to deepspeed_bench.py, e.g.
#   bench/deepspeed/deepspeed_bench.sh --rounds 3
#   bench/deepspeed/deepspeed_bench.sh --worlds 2 --stages 2,3 --precisions bf16 --rounds 1
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=out/bench-venv
if ! "$venv/bin/python" -c "import torch, deepspeed" 2>/dev/null; then
  echo "installing PyTorch and DeepSpeed into $venv (once)" >&2
  [[ -x $venv/bin/python ]] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch numpy deepspeed >&2
fi
source tools/bazel_flags.sh
bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //client/cli:dstrain >&2
dstrain=$(bazel info "${DSTRAIN_BAZEL_CONFIG[@]}" bazel-bin 2>/dev/null)/client/cli/dstrain
demo=deploy/local/demo
[[ -e $demo/data/train_000000.bin ]] ||
  "$dstrain" prepare --text "$demo/tinyshakespeare.txt" --out "$demo/data" >&2
exec "$venv/bin/python" bench/deepspeed/deepspeed_bench.py --python "$venv/bin/python" \
  --dstrain "$dstrain" "$@"
