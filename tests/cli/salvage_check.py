#!/usr/bin/env python3
"""salvage_check.py - hold `qchain-export --salvage` output against what is known.

  salvage_check.py check REPORT OUT REF STDERR [EXPECTED]
      REPORT: the --output=json report; OUT: the exported raw file; REF: a
      raw file with the content every readable byte must have (qemu-img
      convert of the undamaged image, or of the damaged one where qemu-img
      recovers); STDERR: the export's stderr.  Holds: "unreadable" is a
      list of {start, length, reason} sorted, not overlapping, inside the
      virtual size, no two adjacent ones with the same reason (they would
      have been merged); "unreadable-bytes" is their sum; every listed
      range is zeros in OUT; every byte outside them equals REF; stderr
      names each range (offset in hex, length) once.  EXPECTED, a JSON
      list of [start, length, reason-substring], must then equal the
      ranges listed (by start, length, and reason containing the text).

  salvage_check.py past_eof MAP TRUNC REASON
      MAP: `qemu-img map --output=json` of the undamaged image; prints as
      EXPECTED the guest ranges whose data lies at host offsets >= TRUNC
      (the file truncated there), adjacent ones merged.

Exit 0 when all holds; otherwise print what does not and exit 1.
"""
import json
import sys

CHUNK = 1 << 20


def merged(ranges):
    out = []
    for s, l, r in sorted(ranges):
        if out and out[-1][0] + out[-1][1] == s and out[-1][2] == r:
            out[-1][1] += l
        else:
            out.append([s, l, r])
    return out


def past_eof(map_file, trunc, reason):
    got = []
    for e in json.load(open(map_file)):
        if not e.get("data") or "offset" not in e:
            continue
        s, l, off = e["start"], e["length"], e["offset"]
        if off + l <= trunc:
            continue
        skip = max(0, trunc - off)
        got.append((s + skip, l - skip, reason))
    print(json.dumps(merged(got)))
    return 0


def bytes_hold(out, ref, ranges, size):
    """Listed ranges zero in out; everything else equal to ref."""
    errs = []
    with open(out, "rb") as fo, open(ref, "rb") as fr:
        pos, i = 0, 0
        while pos < size and len(errs) < 10:
            n = min(CHUNK, size - pos)
            a, b = fo.read(n), fr.read(n)
            if len(a) != n or len(b) != n:
                return ["short file at %d" % pos]
            # split [pos, pos + n) at range boundaries
            p = pos
            while p < pos + n:
                while i < len(ranges) and ranges[i][0] + ranges[i][1] <= p:
                    i += 1
                inside = i < len(ranges) and ranges[i][0] <= p
                if inside:
                    end = min(pos + n, ranges[i][0] + ranges[i][1])
                elif i < len(ranges):
                    end = min(pos + n, ranges[i][0])
                else:
                    end = pos + n
                x = a[p - pos:end - pos]
                if inside and x.count(0) != len(x):
                    errs.append("listed range at %d: not zeros in %s" % (p, out))
                elif not inside and x != b[p - pos:end - pos]:
                    k = next(j for j in range(len(x)) if x[j] != b[p - pos + j])
                    errs.append("byte %d outside the listed ranges differs "
                                "from %s" % (p + k, ref))
                p = end
            pos += n
    return errs


def check(report, out, ref, stderr, expected=None):
    rep = json.load(open(report))
    errs = []
    size = rep["virtual-size"]
    ranges = [(u["start"], u["length"], u["reason"]) for u in rep["unreadable"]]
    prev = None
    for s, l, r in ranges:
        if l <= 0 or s + l > size:
            errs.append("range %d+%d outside the image" % (s, l))
        if prev and prev[0] + prev[1] > s:
            errs.append("ranges %r and %r overlap or are unsorted" % (prev, (s, l)))
        if prev and prev[0] + prev[1] == s and prev[2] == r:
            errs.append("adjacent ranges with the same reason not merged at %d" % s)
        prev = (s, l, r)
    if rep.get("unreadable-bytes") != sum(l for _, l, _ in ranges):
        errs.append("unreadable-bytes %r is not the sum of the ranges"
                    % rep.get("unreadable-bytes"))
    text = open(stderr).read()
    for s, l, r in ranges:
        key = "guest offset 0x%x, %d bytes" % (s, l)
        if text.count(key) != 1:
            errs.append("stderr should name '%s' once" % key)
    if not errs:
        errs += bytes_hold(out, ref, ranges, size)
    if expected is not None:
        want = json.loads(expected)
        if [(s, l) for s, l, _ in want] != [(s, l) for s, l, _ in ranges] or \
           any(w[2] not in r for w, (_, _, r) in zip(want, ranges)):
            errs.append("ranges listed: %r\n  expected: %r" % (ranges, want))
    for e in errs:
        print(e)
    return 1 if errs else 0


def main(argv):
    if len(argv) >= 5 and argv[1] == "check":
        return check(*argv[2:7])
    if len(argv) == 5 and argv[1] == "past_eof":
        return past_eof(argv[2], int(argv[3]), argv[4])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
