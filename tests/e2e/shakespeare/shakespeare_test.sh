#!/usr/bin/env bash
# End to end through the CLI: prepare Tiny Shakespeare, validate and train a small GPT, and check
# that validation loss falls well below ln(256) = 5.545 (a model that learned nothing) and below
# the ~3.3 nats of a character-frequency (unigram) model: the model must have learned context.
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
dstrain="$ws/client/cli/dstrain"
work="$TEST_TMPDIR/e2e"
mkdir -p "$work"
cp "$ws/tests/e2e/shakespeare/job.json" "$work/job.json"
"$dstrain" prepare --text "$ws/deploy/local/demo/tinyshakespeare.txt" --out "$work/data"
"$dstrain" validate "$work/job.json" > "$work/effective.json"
grep -q '"train_batch_size": 16' "$work/effective.json"
"$dstrain" train "$work/job.json" --threads 2 --metrics-out "$work/metrics.jsonl" \
  | tee "$work/train.log"
/usr/bin/python3 - "$work/metrics.jsonl" <<'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 300, len(rows)
first, last = rows[0]["loss"], rows[-1]
vals = [r["val_loss"] for r in rows if "val_loss" in r]
print(f"first loss {first:.4f}, last loss {last['loss']:.4f}, val losses {vals}")
assert abs(first - math.log(256)) < 0.3, "initial loss should be near ln(256)"
assert len(vals) == 2, "validation runs at steps 150 and 300"
assert vals[-1] < 2.45, f"validation loss {vals[-1]} is not well below ln(256)"
for key in ("step", "loss", "lr", "grad_norm", "tokens_per_s", "step_ms", "loss_scale",
            "skipped", "mem_bytes"):
    assert key in last, key
assert last["mem_bytes"]["params"] > 0 and last["mem_bytes"]["optimizer_state"] > 0
PY
grep -q -- '--- sample ---' "$work/train.log"
