#!/usr/bin/env bash
# collect_test_logs.py + test_summary.py over a made-up bazel invocation: only the tests named by
# the build events count (a stale log left in the testlogs tree by an earlier run does not), a
# retried test counts its last attempt, and a target that failed with an all-passing XML counts
# one failure, and one that passed without a log one pass.
set -euo pipefail
tools=$(dirname "$0")
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/test_logs.XXXXXX")
logs="$tmp/testlogs"

xml() {  # xml PATH CASES...: a JUnit file; each case is pass, fail or skip
  local path=$1 cases="" i=0
  shift
  for c in "$@"; do
    i=$((i + 1))
    case $c in
      pass) cases+="<testcase name=\"c$i\"/>" ;;
      fail) cases+="<testcase name=\"c$i\"><failure message=\"x\"/></testcase>" ;;
      skip) cases+="<testcase name=\"c$i\" result=\"skipped\"/>" ;;
    esac
  done
  mkdir -p "$(dirname "$path")"
  echo "<?xml version=\"1.0\"?><testsuites><testsuite name=\"s\">$cases</testsuite></testsuites>" \
    >"$path"
}
event() {  # event LABEL ATTEMPT STATUS XML_PATH|-
  local outputs="[]"
  [[ "$4" == "-" ]] || outputs="[{\"name\": \"test.xml\", \"uri\": \"file://$4\"}]"
  echo "{\"id\": {\"testResult\": {\"label\": \"$1\", \"run\": 1, \"shard\": 1," \
    "\"attempt\": $2}}, \"testResult\": {\"testActionOutput\": $outputs, \"status\": \"$3\"}}"
}

xml "$logs/a/ok/test.xml" pass pass skip
xml "$logs/a/stale/test.xml" fail  # an earlier run's log of a test this run excludes
xml "$logs/a/flaky/test_attempts/attempt_1.xml" fail
xml "$logs/a/flaky/test.xml" pass
xml "$logs/a/leaky/test.xml" pass pass  # every case passed, then the binary failed at exit
xml "$logs/a/broken/test.xml" pass fail
{
  echo '{"id": {"started": {}}, "started": {}}'
  event //a:ok 1 PASSED "$logs/a/ok/test.xml"
  event //a:flaky 1 FAILED "$logs/a/flaky/test_attempts/attempt_1.xml"
  event //a:flaky 2 PASSED "$logs/a/flaky/test.xml"
  event //a:leaky 1 FAILED "$logs/a/leaky/test.xml"
  event //a:broken 1 FAILED "$logs/a/broken/test.xml"
  event //a:timeout 1 TIMEOUT -
  event //a:nolog 1 PASSED -
} >"$tmp/events.json"

python3 "$tools/collect_test_logs.py" "$tmp/events.json" "$tmp/collected"
got=$(python3 "$tools/test_summary.py" "$tmp/collected")
# ok 2+1 skipped, flaky 1, leaky 2 + 1 status failure, broken 1+1, timeout 1 status failure,
# nolog 1 (passed by bazel's word).
want="7 passed, 3 failed, 1 skipped"
if [[ "$got" != "$want" ]]; then
  echo "FAIL: counted '$got', want '$want'"
  find "$tmp/collected" -name test.xml
  exit 1
fi
# The whole tree (what was counted before) takes the stale failure and misses the two targets.
stale=$(python3 "$tools/test_summary.py" "$logs")
[[ "$stale" == "6 passed, 2 failed, 1 skipped" ]] || { echo "FAIL: tree counted '$stale'"; exit 1; }
echo "PASS: $got"
