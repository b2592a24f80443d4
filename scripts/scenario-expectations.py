#!/usr/bin/env python3
"""Compares a `mock-kong run --json` report with a list of scenarios expected to fail.

usage: scenario-expectations.py REPORT.json LIST.txt

LIST.txt has one scenario file per line (as the report's `file`), text after '#' a comment.
Exit 0 when the failed (or errored) scenarios are exactly the listed ones, 1 otherwise, naming
each difference; the last line is the summary "N passed, N failed, N skipped, N xfail".
"""
import json
import sys


def main():
    report_path, list_path = sys.argv[1], sys.argv[2]
    with open(report_path) as f:
        report = json.load(f)
    expected = set()
    with open(list_path) as f:
        for line in f:
            entry = line.split("#", 1)[0].strip()
            if entry:
                expected.add(entry)
    outcome = {s["file"]: s["outcome"] for s in report["scenarios"]}
    failed = {f for f, o in outcome.items() if o in ("failed", "error")}
    problems = []
    for f in sorted(failed - expected):
        problems.append(f"{f}: failed, but is not listed in {list_path}")
    for f in sorted(expected - failed):
        state = outcome.get(f, "not run (no such scenario)")
        problems.append(f"{f}: listed in {list_path} as failing, but {state}")
    for p in problems:
        print(p)
    passed = sum(1 for o in outcome.values() if o == "passed")
    skipped = sum(1 for o in outcome.values() if o == "skipped")
    xfail = len(failed & expected)
    print(f"{passed} passed, {len(failed - expected)} failed, {skipped} skipped, {xfail} xfail")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
