#!/usr/bin/env bash
# gpu_e2e.sh --smoke with dstrain_cuda_sim as the GPU trainer: every check must pass.
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
"$ws/tests/integration/gpu/gpu_e2e.sh" --smoke "$ws/client/cli/dstrain_cuda_sim" \
  "$ws/client/cli/dstrain" "$ws/deploy/local/demo/tinyshakespeare.txt" \
  "$ws/deploy/local/demo/shakespeare.json" | tee "$TEST_TMPDIR/e2e.out"
grep -qx 'gpu e2e: 11 passed, 0 failed' "$TEST_TMPDIR/e2e.out"
