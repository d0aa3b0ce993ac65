#!/usr/bin/env python3
"""Prints 'N passed, N failed, N skipped' from the JUnit XML Bazel leaves in bazel-testlogs.

Bazel's own summary counts test targets, not test cases, and is not the plain line CI reads.
gtest writes one <testcase> per TEST; for other tests (sh_test, a crashed binary, a timeout)
Bazel writes a one-case XML whose <error>/<failure> marks a failure. A case is skipped when gtest
says result="skipped" (GTEST_SKIP, e.g. a GPU test on a machine without a GPU).

Usage: test_summary.py [--extra-failures N] [testlogs_dir ...]   (default: bazel-testlogs)
--extra-failures adds N failures that left no test log (a target that did not build).
"""
import os
import sys
import xml.etree.ElementTree as ET


def count(xml_path):
    passed = failed = skipped = 0
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError:
        return 0, 1, 0  # an unreadable log is a failure, never a silent pass
    cases = list(root.iter("testcase"))
    if not cases:
        # A suite with no cases but an error attribute (e.g. the binary died before running).
        errors = sum(int(s.get("errors", "0") or 0) + int(s.get("failures", "0") or 0)
                     for s in root.iter("testsuite"))
        return 0, (1 if errors else 0), 0
    for case in cases:
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.get("result") == "skipped" or case.find("skipped") is not None \
                or case.get("status") == "notrun":
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def main():
    args = sys.argv[1:]
    totals = [0, 0, 0]
    if args[:1] == ["--extra-failures"]:
        totals[1] += int(args[1])
        args = args[2:]
    dirs = args or ["bazel-testlogs"]
    for d in dirs:
        for dirpath, _, files in os.walk(d, followlinks=True):
            if "test.xml" in files:
                for i, n in enumerate(count(os.path.join(dirpath, "test.xml"))):
                    totals[i] += n
    print(f"{totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")


if __name__ == "__main__":
    main()
