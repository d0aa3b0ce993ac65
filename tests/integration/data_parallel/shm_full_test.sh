#!/usr/bin/env bash
# A /dev/shm too small for the shared buffers (docs/shm.md; a container's default is 64 MB): in a
# private mount namespace with a 40 MB /dev/shm, two ranks of a 6.3M-parameter GPT at ZeRO stage 0
# get their segment (about 26 MB) but not the window for their gradients (2 x 25.6 MB). The job
# says so and trains on with its collectives staged, to the same weights and losses, bitwise, as
# the same job where the window fits. Skipped where no mount namespace can be made.
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
dstrain="$ws/client/cli/dstrain"
out="$TEST_TMPDIR/shm_full"
mkdir -p "$out"
source "$ws/tests/lib/skip.sh"
unshare -m sh -c 'mount -t tmpfs -o size=1m tmpfs /dev/shm' 2>/dev/null ||
  skip_test shm_full_test shm_full "cannot mount a private /dev/shm here (unshare -m, tmpfs)"

/usr/bin/python3 - "$ws/bench/zero/job.json" "$out/job.json" <<'PY'
import json, os, sys
src, dst = sys.argv[1:3]
j = json.load(open(src))
j["data"]["train"] = os.path.join(os.path.dirname(os.path.abspath(src)), j["data"]["train"])
j["job"]["train_steps"] = 3
json.dump(j, open(dst, "w"))
PY
"$dstrain" launch --nproc 2 "$out/job.json" --metrics-out "$out/roomy.jsonl" \
  --save-model "$out/roomy.bin" > "$out/roomy.log" 2>&1
grep -q 'comm: gradients in .* of memory shared by the group' "$out/roomy.log"
unshare -m sh -c 'mount -t tmpfs -o size=40m tmpfs /dev/shm && exec "$@"' sh \
  "$dstrain" launch --nproc 2 "$out/job.json" --metrics-out "$out/full.jsonl" \
  --save-model "$out/full.bin" > "$out/full.log" 2>&1 || {
  cat "$out/full.log" >&2
  exit 1
}
grep 'note: comm: no room for' "$out/full.log"
grep -q '^\[rank 0\] done: 3 steps' "$out/full.log"
cmp "$out/roomy.bin" "$out/full.bin"
/usr/bin/python3 - "$out/roomy.jsonl" "$out/full.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(f)] for f in sys.argv[1:3])
assert len(a) == 3 and a == b, (a, b)
PY
echo "shm_full_test: staged without room, bitwise equal to shared (weights and 3 losses)"
