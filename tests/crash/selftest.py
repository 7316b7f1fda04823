#!/usr/bin/env python3
"""The crash-state generator on two tiny writers (crash.py's own test):
  inplace: writes 'out' (3 sectors) under its final name, no fsync
  safe:    writes 'out.tmp', fsync, rename to 'out', fsync the directory
The generator must produce absent, empty, torn (some sectors only) and
complete 'out' states for the first, and for the second never anything but
absent or complete, with 'out' always there at the end with seed 0.
Exit 0 when it does, 1 otherwise (77: no strace)."""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import crash  # noqa: E402

DATA = bytes([0x41]) * 512 + bytes([0x42]) * 512 + bytes([0x43]) * 512

INPLACE = """
import os
fd = os.open('out', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, %r)
os.close(fd)
""" % DATA

SAFE = """
import os
fd = os.open('out.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, %r)
os.fsync(fd)
os.close(fd)
os.rename('out.tmp', 'out')
d = os.open('.', os.O_RDONLY | os.O_DIRECTORY)
os.fsync(d)
os.close(d)
""" % DATA


def kinds(rec, seeds=range(0, 60)):
    """{kind of 'out': [(point, seed)]} over every point and SEEDS"""
    out = {}
    n = len(rec['events'])
    for k in range(n + 1):
        for s in seeds:
            names, content, _ = crash.crash_state(rec, k, s)
            key = (rec['root'], 'out')
            if key not in names:
                kind = 'absent'
            else:
                c = bytes(content[names[key]])
                if c == DATA:
                    kind = 'complete'
                elif not c:
                    kind = 'empty'
                else:
                    secs = [c[i:i + 512] for i in range(0, len(c), 512)]
                    kind = 'torn' if any(x == DATA[i * 512:(i + 1) * 512]
                                         for i, x in enumerate(secs)) \
                        else 'garbage'
            out.setdefault(kind, []).append((k, s))
    return out


def record(script, work):
    d = os.path.join(work, 'w')
    os.makedirs(d)
    ev = os.path.join(work, 'ev')
    rc = subprocess.call([sys.executable, HERE + '/crash.py', 'record', d,
                          ev, '--', sys.executable, '-c', script])
    assert rc == 0, "recorded run failed"
    return crash.load(ev)


def main():
    if not shutil.which('strace'):
        print("strace not installed: skipped")
        return 77
    fails = 0
    work = tempfile.mkdtemp()
    try:
        rec = record(INPLACE, os.path.join(work, 'a'))
        k = kinds(rec)
        print("in place:", {x: len(v) for x, v in k.items()})
        for want in ('absent', 'empty', 'torn', 'complete'):
            if want not in k:
                print("not ok - in place: no %s state" % want)
                fails += 1
        n = len(rec['events'])
        names, content, _ = crash.crash_state(rec, n, 0)
        if (rec['root'], 'out') in names:
            print("not ok - in place: 'out' durable without any fsync")
            fails += 1
        if not fails:
            print("ok - in place: absent, empty, torn and complete states")
        rec = record(SAFE, os.path.join(work, 'b'))
        k = kinds(rec)
        print("tmp+fsync+rename+dir fsync:", {x: len(v) for x, v in k.items()})
        bad = {x: v[:3] for x, v in k.items() if x not in ('absent', 'complete')}
        names, content, _ = crash.crash_state(rec, len(rec['events']), 0)
        if bad:
            print("not ok - safe writer: states %s" % bad)
            fails += 1
        elif bytes(content.get(names.get((rec['root'], 'out')), b'')) != DATA:
            print("not ok - safe writer: 'out' not durable at the end")
            fails += 1
        elif 'complete' not in k or 'absent' not in k:
            print("not ok - safe writer: expected absent and complete states")
            fails += 1
        else:
            print("ok - safe writer: only absent or complete, durable at the end")
        # the state files on disk: one written state, inode translation
        out = os.path.join(work, 'st')
        crash.cmd_states([os.path.join(work, 'b', 'ev'), out, '10'])
        for line in open(os.path.join(out, 'list')):
            i = line.split()[0]
            p = os.path.join(out, 's' + i, 'out')
            if os.path.exists(p) and open(p, 'rb').read() != DATA:
                print("not ok - written state s%s has a partial 'out'" % i)
                fails += 1
    finally:
        shutil.rmtree(work)
    print("%s" % ("all passed" if not fails else "%d failed" % fails))
    return 1 if fails else 0


if __name__ == '__main__':
    sys.exit(main())
