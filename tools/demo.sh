#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: installs what it needs (apt), builds dstrain,
# turns Tiny Shakespeare into token shards, starts a local service (deploy/local: one
# dstrain-coordinator and two dstrain-worker agents), submits the demo GPT (4 layers, 256 wide,
# byte-level vocabulary) as a ZeRO stage-2 job on 2 ranks, follows it to the end with a progress
# bar, shows the trainers' last output (validation loss and a text sample), the committed
# checkpoints, and exports the trained model. The service is stopped at the end
# (DSTRAIN_KEEP=1 leaves it running for `dstrain list|status|logs|workers|checkpoints`).
# Writes: deploy/local/demo/data/ (shards), out/demo/ckpt/ (checkpoints), out/demo/model.bin
# (llm.c format), out/demo/curves.png (`dstrain plot` of the run), out/local/ (service logs and
# state).
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install_deps.sh
source tools/bazel_flags.sh
bazel build "${DSTRAIN_BAZEL_CONFIG[@]}" //client/cli:dstrain \
  //coordinator/server:dstrain-coordinator //worker/agent:dstrain-worker
dstrain=bazel-bin/client/cli/dstrain

demo=deploy/local/demo
if ! ls "$demo"/data/train_*.bin >/dev/null 2>&1; then
  "$dstrain" prepare --text "$demo/tinyshakespeare.txt" --out "$demo/data"
fi
"$dstrain" validate "$demo/shakespeare-zero2.json" >/dev/null
rm -rf out/demo && mkdir -p out/demo

deploy/local/down.sh
deploy/local/up.sh 2 out/local
if [[ ${DSTRAIN_KEEP:-0} != 1 ]]; then trap 'deploy/local/down.sh' EXIT; fi
eval "$(grep '^export' out/local/env)"
echo "Prometheus metrics while it runs: see the URLs above (curl them, or point Prometheus there)."

job="shakespeare-$(date +%Y%m%d-%H%M%S)"
"$dstrain" submit "$demo/shakespeare-zero2.json" --id "$job" --follow
echo "--- the end of rank 0's output ---"
"$dstrain" logs "$job" --rank 0 --tail 14
echo "--- committed checkpoints ---"
"$dstrain" checkpoints "$job"
"$dstrain" export out/demo/ckpt --out out/demo/model.bin
echo "--- the run's curves, from the coordinator's stored metrics ---"
"$dstrain" plot "$job" --out out/demo/curves.png \
  --metrics loss,val_loss,lr,grad_norm,tokens_per_s,step_s
echo "trained weights (llm.c format): out/demo/model.bin; curves: out/demo/curves.png;" \
  "service logs: out/local/"
