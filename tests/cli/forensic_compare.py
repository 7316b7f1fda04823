#!/usr/bin/env python3
"""forensic_compare.py - hold `qchain-map --all-layers` against qemu-img.

  forensic_compare.py layer ORACLE OURS DEPTH FILENAME
      ORACLE: `qemu-img map --output=json` of the layer at DEPTH opened
      alone ("backing": null); OURS: `qchain-map --all-layers
      --output=json` of the chain.  Our entries at DEPTH, with the keys
      qemu-img 7.2 does not print removed and merged by qemu-img's rule,
      must equal the oracle's allocated (present) entries; each of ours
      must name FILENAME; compressed entries must carry their descriptor
      and no offset.

  forensic_compare.py human OURS_JSON OURS_HUMAN
      the human form lists the same entries as the JSON form.

Exit 0 when they agree; otherwise print the differences and exit 1.
"""
import json
import sys

EXTRA = ("compressed", "compressed-offset", "compressed-size", "filename")


def mergeable(a, b):
    if a["start"] + a["length"] != b["start"]:
        return False
    for k in ("depth", "present", "zero", "data"):
        if a[k] != b[k]:
            return False
    if ("offset" in a) != ("offset" in b):
        return False
    return "offset" not in a or a["offset"] + a["length"] == b["offset"]


def merge(entries):
    out = []
    for e in entries:
        if out and mergeable(out[-1], e):
            out[-1]["length"] += e["length"]
        else:
            out.append(dict(e))
    return out


def layer(oracle_path, ours_path, depth, filename):
    oracle = [e for e in json.load(open(oracle_path)) if e["present"]]
    ours = [e for e in json.load(open(ours_path)) if e["depth"] == depth]
    bad = []
    for e in ours:
        if e.get("filename") != filename:
            bad.append("entry %r: filename is not %r" % (e, filename))
        if e["compressed"] != ("compressed-offset" in e) or \
           e["compressed"] != ("compressed-size" in e):
            bad.append("entry %r: compressed descriptor keys" % e)
        if e["compressed"] and ("offset" in e or not e["data"]):
            bad.append("entry %r: compressed with an offset or no data" % e)
        if not e["present"]:
            bad.append("entry %r: unallocated entries are omitted" % e)
    stripped = []
    for e in ours:
        e = {k: v for k, v in e.items() if k not in EXTRA}
        e["depth"] = 0
        stripped.append(e)
    got = merge(stripped)
    if got != oracle:
        bad.append("depth %d differs from qemu-img map of the layer alone"
                   % depth)
        n = max(len(got), len(oracle))
        shown = 0
        for i in range(n):
            a = oracle[i] if i < len(oracle) else None
            b = got[i] if i < len(got) else None
            if a != b and shown < 10:
                bad.append("  [%d] qemu-img: %s" % (i, a))
                bad.append("  [%d] qchain:   %s" % (i, b))
                shown += 1
    for line in bad:
        print(line)
    return 1 if bad else 0


def human(json_path, human_path):
    ours = json.load(open(json_path))
    want = ["%-7s%-16s%-16s%-12s%-24s%s" % ("Depth", "Offset", "Length",
                                           "Kind", "Mapped to", "File")]

    def hx(v):
        return "0" if v == 0 else "%#x" % v

    for e in ours:
        kind = "compressed" if e["compressed"] else \
               "zero" if e["zero"] else "data"
        if e["compressed"]:
            where = "%s+%s" % (hx(e["compressed-offset"]),
                               hx(e["compressed-size"]))
        elif "offset" in e:
            where = hx(e["offset"])
        else:
            where = "-"
        want.append("%-7d%-16s%-16s%-12s%-24s%s" % (
            e["depth"], hx(e["start"]), hx(e["length"]), kind, where,
            e["filename"]))
    got = open(human_path).read().split("\n")
    if got and got[-1] == "":
        got.pop()
    if got != want:
        print("human form differs from the JSON form:")
        for i in range(max(len(got), len(want))):
            a = want[i] if i < len(want) else None
            b = got[i] if i < len(got) else None
            if a != b:
                print("  line %d want: %r" % (i + 1, a))
                print("  line %d got:  %r" % (i + 1, b))
        return 1
    return 0


def main():
    if sys.argv[1] == "layer":
        return layer(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    if sys.argv[1] == "human":
        return human(sys.argv[2], sys.argv[3])
    sys.exit("usage: forensic_compare.py layer|human ...")


if __name__ == "__main__":
    sys.exit(main())
