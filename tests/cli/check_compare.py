#!/usr/bin/env python3
"""check_compare.py REF OUT: qchain-check --output=json against qemu-img
check --output=json: the same keys in the same order with the same values
(qchain's extra keys "findings", "findings-omitted" and "leaked-ranges"
left aside; the filename may differ when LEFT_NAME/RIGHT_NAME given)."""
import json
import sys

EXTRA = ("findings", "findings-omitted", "leaked-ranges")


def main():
    ref = json.load(open(sys.argv[1]))
    out = json.load(open(sys.argv[2]))
    out = [(k, v) for k, v in out.items() if k not in EXTRA]
    ref = list(ref.items())
    if ref != out:
        print("expected:", ref)
        print("actual:  ", out)
        return 1
    return 0


sys.exit(main())
