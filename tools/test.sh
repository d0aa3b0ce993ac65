#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what it needs (apt), builds
# everything (CUDA targets too when the toolkit is present) with warnings as errors, checks the
# formatting, runs every test, runs them again (all but the CUDA ones) under AddressSanitizer +
# UndefinedBehaviorSanitizer, fuzzes each libFuzzer target briefly, and ends with the line
# "N passed, N failed, N skipped". Exit status 0 only when nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

tools/install_deps.sh || { echo "dependency installation failed"; echo "0 passed, 1 failed"; exit 1; }
source tools/bazel_flags.sh

logs="$root/out/testlogs"
rm -rf "$logs"
mkdir -p "$logs"
status=0

collect() {  # collect NAME: copy aside the test.xml of each test this phase's bazel ran
  python3 tools/collect_test_logs.py "$logs/$1.events.json" "$logs/$1" ||
    { echo "no test results from phase $1"; bazel_failures=$((bazel_failures + 1)); }
}

# A phase whose bazel fails without a failing test case (a target that does not build, a crash
# of bazel itself) counts as one failure, so the last line never says 0 failed then.
bazel_failures=0

# Formatting is part of the suite: one test case, failed (listing the files) when any tracked C++
# or CUDA file differs from what clang-format (.clang-format) makes of it.
echo "=== clang-format ==="
mkdir -p "$logs/format"
if report=$(tools/format.sh --check 2>&1); then
  echo "every C++/CUDA file is formatted"
  failure=""
else
  echo "$report"
  failure="<failure message=\"files need clang-format (tools/format.sh)\"><![CDATA[$report]]></failure>"
fi
cat >"$logs/format/test.xml" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="format" tests="1"><testcase name="clang_format">$failure</testcase>
</testsuite></testsuites>
XML
[[ -z "$failure" ]] || status=1

echo "=== build and test (${DSTRAIN_BAZEL_CONFIG[*]:-with CUDA}) ==="
bazel test //... "${DSTRAIN_BAZEL_CONFIG[@]}" --test_tag_filters=-manual \
  --build_event_json_file="$logs/main.events.json" || {
  status=1
  bazel_failures=$((bazel_failures + 1))
}
collect main

# CUDA targets are left out here: their tests only skip on a machine without a GPU, and building
# every .cu file a second time would double nvcc's share of the suite's time. Only what the tests
# need is built again (--build_tests_only: not the benchmarks and tools the phase above built).
# The integration and end-to-end tests run here too (their real processes are the sanitized
# binaries); the few tests tagged no_sanitizer say why next to the tag.
echo "=== tests under ASan + UBSan ==="
bazel test //... --config=nocuda --config=asan --test_tag_filters=-manual,-no_sanitizer \
  --build_tests_only --build_event_json_file="$logs/asan.events.json" || {
  status=1
  bazel_failures=$((bazel_failures + 1))
}
collect asan

# The fuzz targets (tests/fuzz, docs/fuzzing.md), built with clang, libFuzzer, ASan and UBSan, each
# fuzzing for 10 s from its checked-in seeds; a crash, leak or sanitizer report fails its test.
# .bazelrc's fuzz config selects only the tests tagged fuzz and builds nothing else. (The phases
# above ran the same targets without libFuzzer, over their seeds alone.)
echo "=== fuzz targets (clang + libFuzzer, 10 s each) ==="
bazel test //... --config=fuzz --build_event_json_file="$logs/fuzz.events.json" || {
  status=1
  bazel_failures=$((bazel_failures + 1))
}
collect fuzz

bazel shutdown >/dev/null 2>&1 || true
echo "=== summary ==="
echo -n "plain:     "; python3 tools/test_summary.py "$logs/main"
echo -n "sanitized: "; python3 tools/test_summary.py "$logs/asan"
echo -n "fuzzed:    "; python3 tools/test_summary.py "$logs/fuzz"
line=$(python3 tools/test_summary.py "$logs")
failed=$(sed -n 's/.* \([0-9]*\) failed.*/\1/p' <<<"$line")
if [[ "${failed:-1}" != "0" ]]; then status=1; fi
if [[ "${failed:-0}" == "0" && $bazel_failures -gt 0 ]]; then
  echo "($bazel_failures bazel run(s) failed without a failing test case: a target did not build)"
  line=$(python3 tools/test_summary.py --extra-failures "$bazel_failures" "$logs")
fi
echo "$line"
exit $status
