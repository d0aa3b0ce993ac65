#!/usr/bin/env bash
# One fuzz target as a test (fuzz.bzl): run_fuzzer.sh BINARY SEED_CORPUS DICT SECONDS.
# Under --config=fuzz BINARY is a libFuzzer binary: it starts from the checked-in seeds and fuzzes
# for SECONDS, and any crash, leak, sanitizer report, input slower than -timeout or allocation
# beyond -malloc_limit_mb fails the test (the input that did it is kept among the test's
# outputs, bazel-testlogs/.../test.outputs/). Built with gcc it is replay_main.cc's driver, which
# runs every seed once. The last lines say how far the run got.
set -uo pipefail
bin=$1
seeds=$2
dict=$3
seconds=$4

work="${TEST_TMPDIR:-$(mktemp -d)}/corpus"
artifacts="${TEST_UNDECLARED_OUTPUTS_DIR:-${TEST_TMPDIR:-/tmp}}/"
mkdir -p "$work" "$artifacts"
dict_flag=()
[[ -n "$dict" ]] && dict_flag=(-dict="$dict")

# New inputs go to $work (the first directory); the seeds are only read. -timeout: seconds one
# input may take; -rss_limit_mb/-malloc_limit_mb: a parser must not allocate its way out of bad
# input (libFuzzer counts these as crashes too).
"$bin" "$work" "$seeds" "${dict_flag[@]}" \
  -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
  -print_final_stats=1 -artifact_prefix="$artifacts" 2>&1 | tee "${TEST_TMPDIR:-/tmp}/fuzz.log"
rc=${PIPESTATUS[0]}
if grep -q "^stat::number_of_executed_units" "${TEST_TMPDIR:-/tmp}/fuzz.log"; then
  # libFuzzer's last "#N DONE cov: .. ft: .." (or latest status) line and its execution count.
  echo "summary: $(grep -E '^#[0-9]+' "${TEST_TMPDIR:-/tmp}/fuzz.log" | tail -1)"
fi
if ((rc != 0)); then
  echo "FAILED: $bin exited with $rc (inputs that failed: ${artifacts})"
  exit 1
fi
