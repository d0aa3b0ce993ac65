#!/usr/bin/env bash
# docs/migrating-from-deepspeed.md's generated key table must be what the generator makes from
# the configuration's key table today.
set -euo pipefail
ws="$TEST_SRCDIR/$TEST_WORKSPACE"
guide="$ws/docs/migrating-from-deepspeed.md"
regenerated="$TEST_TMPDIR/migrating-from-deepspeed.md"
cp "$guide" "$regenerated"
chmod u+w "$regenerated"
"$ws/worker/config/key_table_markdown" --write "$regenerated"
if ! diff -u "$guide" "$regenerated"; then
  cat >&2 <<'MSG'
FAIL: the key table in docs/migrating-from-deepspeed.md differs from the configuration's key table
(worker/config/key_effects.cc, keys.cc, features.cc); the diff above goes from the committed
guide to what it should be. Regenerate it with

  bazel run //worker/config:key_table_markdown -- --write docs/migrating-from-deepspeed.md
MSG
  exit 1
fi
echo "PASS: the key table of docs/migrating-from-deepspeed.md is up to date"
