#!/usr/bin/env bash
# InitProcess re-executes once with a passive wait policy, keeps the arguments, and
# leaves a user's own setting alone.
set -euo pipefail
probe="$TEST_SRCDIR/$TEST_WORKSPACE/common/runtime/process_init_probe"
out=$(env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$probe" a b)
[[ "$out" == "PASSIVE 3" ]] || { echo "got '$out'"; exit 1; }
out=$(OMP_WAIT_POLICY=ACTIVE "$probe")
[[ "$out" == "ACTIVE 1" ]] || { echo "got '$out'"; exit 1; }
echo ok
