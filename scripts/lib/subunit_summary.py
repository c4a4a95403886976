"""Summarize a subunit v2 stream (tempest's `stestr last --subunit`):
counts, every skip reason, and every failure with its traceback in a file.

Exit 1 when fewer than --min-pass passed, or when a test failed that is not
in --known-failures (a file of test ids or id prefixes, one per line, `#`
comments): those still run, and are printed as known failures, so the list
records what is not done yet and a regression anywhere else turns CI red. A
listed test that passes is reported, to be taken off the list."""

import argparse
import collections
import sys

import subunit
import testtools


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--min-pass", type=int, required=True)
    ap.add_argument("--failures", required=True, help="file for the failures' details")
    ap.add_argument("--known-failures", help="file of test ids not expected to pass yet")
    args = ap.parse_args()
    known = []
    if args.known_failures:
        with open(args.known_failures) as f:
            known = [l.strip() for l in f if l.strip() and not l.lstrip().startswith("#")]

    def is_known(tid):
        return any(k in tid for k in known)

    tests = {}

    def on_test(t):
        tests[t["id"]] = t

    result = testtools.StreamToDict(on_test)
    result.startTestRun()
    subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout").run(result)
    result.stopTestRun()

    by_status = collections.defaultdict(list)
    # A class fixture (setUpClass) that failed is one failure here and takes
    # its tests down with it: they never ran, so they are not counted.
    for t in tests.values():
        by_status[t["status"]].append(t)

    passed = len(by_status["success"])
    failed = len(by_status["fail"])
    skipped = len(by_status["skip"])
    print(f"tempest: {passed} passed, {failed} failed, {skipped} skipped, {len(tests)} in all")
    reasons = collections.Counter()
    for t in by_status["skip"]:
        reason = t["details"].get("reason")
        text = reason.as_text().strip() if reason is not None else "(no reason given)"
        reasons[text] += 1
    for text, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  skipped {n:3d}: {text}")
    unexpected = 0
    with open(args.failures, "w") as f:
        for t in sorted(by_status["fail"], key=lambda t: t["id"]):
            if is_known(t["id"]):
                print(f"  failed (known, not done yet): {t['id']}")
            else:
                unexpected += 1
                print(f"  FAILED: {t['id']}")
            f.write(f"=== {t['id']}\n")
            for name, content in t["details"].items():
                if name in ("traceback", "reason"):
                    f.write(content.as_text())
                    f.write("\n")
    for t in sorted(by_status["success"], key=lambda t: t["id"]):
        if is_known(t["id"]):
            print(f"  now passes (take it off the known failures): {t['id']}")
    print(f"tempest: {failed - unexpected} known failures, {unexpected} unexpected")
    if unexpected or passed < args.min_pass:
        print(f"tempest: the bar is at least {args.min_pass} passed and no unexpected failure")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
