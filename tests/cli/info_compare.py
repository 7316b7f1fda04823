#!/usr/bin/env python3
"""info_compare.py QEMU.json QCHAIN.json

Compare `qchain-info --output=json` with `qemu-img info --output=json` on
the keys qchain promises to share with qemu-img.  Each key must be present
in one output iff it is present in the other, and equal.  With
--backing-chain both outputs are lists, compared element by element.
Extra keys qchain adds (header, extensions, ...) are ignored.

Exit 0 when they agree, 1 (printing every difference) when not, 2 on
unreadable input.
"""
import json
import sys

TOP_KEYS = [
    "filename", "format", "virtual-size", "actual-size", "cluster-size",
    "dirty-flag", "backing-filename", "full-backing-filename",
    "backing-filename-format",
]
SNAPSHOT_KEYS = [
    "id", "name", "vm-state-size", "date-sec", "date-nsec", "vm-clock-sec",
    "vm-clock-nsec", "icount",
]
DATA_KEYS = [
    "compat", "compression-type", "lazy-refcounts", "refcount-bits",
    "corrupt", "extended-l2", "data-file", "data-file-raw", "bitmaps",
]

MISSING = object()


def show(v):
    return "(absent)" if v is MISSING else json.dumps(v, sort_keys=True)


def cmp_key(path, ref, out, key, errors):
    a = ref.get(key, MISSING) if isinstance(ref, dict) else MISSING
    b = out.get(key, MISSING) if isinstance(out, dict) else MISSING
    if a is MISSING and b is MISSING:
        return
    # type-strict: true != 1
    if a is MISSING or b is MISSING or type(a) is not type(b) or a != b:
        errors.append("%s%s: qemu-img %s, qchain %s" % (path, key, show(a), show(b)))


def cmp_image(path, ref, out, errors):
    if not isinstance(ref, dict) or not isinstance(out, dict):
        errors.append("%s: qemu-img gives %s, qchain %s" % (
            path or "top level", type(ref).__name__, type(out).__name__))
        return
    for k in TOP_KEYS:
        cmp_key(path, ref, out, k, errors)

    # snapshots
    a, b = ref.get("snapshots", MISSING), out.get("snapshots", MISSING)
    if (a is MISSING) != (b is MISSING):
        errors.append("%ssnapshots: qemu-img %s, qchain %s" % (path, show(a), show(b)))
    elif a is not MISSING:
        if not isinstance(b, list) or len(a) != len(b):
            errors.append("%ssnapshots: qemu-img has %d, qchain %s" % (
                path, len(a), len(b) if isinstance(b, list) else show(b)))
        else:
            for i, (sa, sb) in enumerate(zip(a, b)):
                for k in SNAPSHOT_KEYS:
                    cmp_key("%ssnapshots[%d]." % (path, i), sa, sb, k, errors)

    # format-specific
    a, b = ref.get("format-specific", MISSING), out.get("format-specific", MISSING)
    if (a is MISSING) != (b is MISSING):
        errors.append("%sformat-specific: qemu-img %s, qchain %s" % (path, show(a), show(b)))
    elif a is not MISSING:
        fpath = path + "format-specific."
        cmp_key(fpath, a, b, "type", errors)
        da, db = a.get("data", MISSING), b.get("data", MISSING) if isinstance(b, dict) else MISSING
        if (da is MISSING) != (db is MISSING):
            errors.append("%sdata: qemu-img %s, qchain %s" % (fpath, show(da), show(db)))
        elif da is not MISSING:
            for k in DATA_KEYS:
                cmp_key(fpath + "data.", da, db, k, errors)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1]) as f:
            ref = json.load(f)
    except (OSError, ValueError) as e:
        print("cannot read qemu-img output %s: %s" % (sys.argv[1], e))
        return 2
    try:
        with open(sys.argv[2]) as f:
            out = json.load(f)
    except (OSError, ValueError) as e:
        print("qchain output %s is not valid JSON: %s" % (sys.argv[2], e))
        return 1

    errors = []
    if isinstance(ref, list):
        if not isinstance(out, list):
            errors.append("qemu-img gives a list (backing chain), qchain a %s"
                          % type(out).__name__)
        else:
            if len(ref) != len(out):
                errors.append("backing chain length: qemu-img %d, qchain %d"
                              % (len(ref), len(out)))
            for i, (a, b) in enumerate(zip(ref, out)):
                cmp_image("[%d]." % i, a, b, errors)
    else:
        cmp_image("", ref, out, errors)

    for e in errors:
        print(e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
