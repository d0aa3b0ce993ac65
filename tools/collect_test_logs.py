#!/usr/bin/env python3
"""Copies the JUnit XML of exactly the tests one bazel invocation ran (or took from its cache).

Usage: collect_test_logs.py BUILD_EVENTS.json DEST

BUILD_EVENTS.json is what `bazel test --build_event_json_file=...` wrote. bazel-testlogs is not a
list of this run's tests: it keeps the logs of every test that ever ran in the output base, so a
test since excluded by a tag (or deleted) would still be counted, with whatever it last said. The
build events name each test result of this invocation; for a test retried (flaky) only the last
attempt counts, as in Bazel's own summary.

A target whose status is not PASSED/FLAKY but whose XML holds no failing case (a test binary that
wrote its XML and then died: a leak report at exit, a timeout after the last case) gets one more
XML with one failing case naming the target, so the counts never say 0 failed for a failed target;
a target bazel reports passed without an XML to read counts one passed case.
"""
import json
import os
import shutil
import sys
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

PASSING = {"PASSED", "FLAKY"}


def last_attempts(events_path):
    """{(label, run, shard): (attempt, status, xml_path or None)} for the last attempt of each."""
    results = {}
    with open(events_path) as f:
        for line in f:
            event = json.loads(line)
            key = event.get("id", {}).get("testResult")
            if key is None or "testResult" not in event:
                continue
            result = event["testResult"]
            xml = None
            for output in result.get("testActionOutput", []):
                if output.get("name") == "test.xml" and output.get("uri", "").startswith("file://"):
                    xml = urllib.request.url2pathname(urllib.parse.urlparse(output["uri"]).path)
            ident = (key["label"], key.get("run", 1), key.get("shard", 1))
            attempt = key.get("attempt", 1)
            if ident not in results or results[ident][0] < attempt:
                results[ident] = (attempt, result.get("status", "NO_STATUS"), xml)
    return results


def has_failure(xml_path):
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError):
        return True  # test_summary.py counts an unreadable log as a failure already
    if any(c.find("failure") is not None or c.find("error") is not None
           for c in root.iter("testcase")):
        return True
    return any(int(s.get("errors", "0") or 0) + int(s.get("failures", "0") or 0)
               for s in root.iter("testsuite"))


def write_status_case(path, label, status, failed):
    """One test case named after the target: failed, or passed (bazel's word, no log to count)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    failure = f'<failure message="bazel status {escape(status)}"/>' if failed else ""
    with open(path, "w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites><testsuite name="bazel" '
                f'tests="1"><testcase name="{escape(label, {chr(34): "&quot;"})}">{failure}'
                '</testcase></testsuite></testsuites>\n')


def main():
    events_path, dest = sys.argv[1], sys.argv[2]
    os.makedirs(dest, exist_ok=True)
    for (label, run, shard), (_, status, xml) in sorted(last_attempts(events_path).items()):
        where = os.path.join(label.lstrip("/").replace(":", "/"), f"run_{run}_shard_{shard}")
        copied = xml is not None and os.path.exists(xml)
        if copied:
            os.makedirs(os.path.join(dest, where), exist_ok=True)
            shutil.copyfile(xml, os.path.join(dest, where, "test.xml"))
        status_xml = os.path.join(dest, "bazel_status", where, "test.xml")
        if status not in PASSING and (not copied or not has_failure(xml)):
            write_status_case(status_xml, label, status, failed=True)
        elif status in PASSING and not copied:
            write_status_case(status_xml, label, status, failed=False)


if __name__ == "__main__":
    main()
