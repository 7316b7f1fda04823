#!/usr/bin/env python3
"""Power-loss states of a real command, simulated at the system-call level.

  crash.py record WORKDIR EVENTS -- CMD ARGS...
      Run CMD (cwd WORKDIR) under strace, snapshot WORKDIR's files before,
      and store the ordered events that touch WORKDIR (file content changes
      with their data, file syncs, directory entry changes, directory syncs)
      in EVENTS (a pickle).  Exits with CMD's exit code.
  crash.py states EVENTS OUTDIR MAX [RANDOM_SEED]
      Write up to MAX distinct crash states into OUTDIR/s<N>/ (files as
      after a power loss) and OUTDIR/list ("N point seed" lines): every
      sync point (before and after each fsync/fdatasync/syncfs/sync) with
      seeds 0 and 1, then random (point, seed) samples.
  crash.py state EVENTS POINT SEED OUTDIR
      One state.
  crash.py summary EVENTS
      The event list, one line each (for reading a failure).
  crash.py leak IMAGE
      Leak two clusters in a qcow2 image (refcount 1, referenced by nothing).

The model (DESIGN.md A.3).  A file's content change (write, pwrite,
writev, ftruncate, O_TRUNC, fallocate, copy_file_range, FICLONERANGE) is
durable once that file is fsync'ed or fdatasync'ed after it (or sync,
syncfs); a directory entry change (create, rename, unlink, link) once its
directory is fsync'ed after it.  A power loss at point K (the first K
events happened) keeps every durable change; each other change survives
or not, independently: seed 0 keeps none of them, seed 1 all of them
(what SIGKILL leaves), any other seed a random subset, applied in order
(a directory change whose precondition fails in the crash state, such as
a rename of a name that is not there, is skipped), and a write of several
512-byte sectors may survive in part, sector by sector.  Content belongs
to the inode: it follows renames, and a file whose creating entry did not
survive is absent however synced its data was.

A simulated disk gives files new inode numbers: where a file names a layer
by "device:inode" (qchain-commit's journal and record of committed layers,
names containing ".qchain-commit"), the numbers are translated to the
state's files, and every file gets the modification time it had when the
command ended.
"""
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
import hashlib

SECTOR = 512
STRACE_MAX = 1073741823  # the largest -s strace 6.1 accepts
TRACE = ("openat,open,creat,write,pwrite64,pwritev,pwritev2,writev,ftruncate,"
         "fallocate,fsync,fdatasync,sync,syncfs,sync_file_range,rename,"
         "renameat,renameat2,unlink,unlinkat,link,linkat,mkdir,mkdirat,close,"
         "dup,dup2,dup3,fcntl,ioctl,copy_file_range,lseek")

# ---------------------------------------------------------------- parsing

LINE = re.compile(r'^(\d+) +(.*)$')
CALL = re.compile(r'^([a-z0-9_]+)\((.*)\) += (.*)$', re.S)
UNFIN = re.compile(r'^([a-z0-9_]+)\((.*) <unfinished \.\.\.>$', re.S)
RESUME = re.compile(r'^<\.\.\. ([a-z0-9_]+) resumed>(.*)\) += (.*)$', re.S)
HEX = re.compile(r'\\x([0-9a-f]{2})')


def unhex(s):
    """A -xx string's bytes (every byte is \\xHH)."""
    return bytes(int(h, 16) for h in HEX.findall(s))


def split_args(s):
    """Top-level comma-separated arguments of a strace call."""
    out, depth, cur, i, instr = [], 0, [], 0, False
    while i < len(s):
        c = s[i]
        if instr:
            cur.append(c)
            if c == '\\':
                cur.append(s[i + 1])
                i += 1
            elif c == '"':
                instr = False
        elif c == '"':
            instr = True
            cur.append(c)
        elif c in '{[(<':
            depth += 1
            cur.append(c)
        elif c in '}])>':
            depth -= 1
            cur.append(c)
        elif c == ',' and depth == 0:
            out.append(''.join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if cur or out:
        out.append(''.join(cur).strip())
    return out


FDARG = re.compile(r'^(-?\d+|AT_FDCWD)(?:<(.*)>)?(?:\(deleted\))?$', re.S)


def fd_of(arg):
    """(fd number or 'AT_FDCWD', path or None) of a -y argument."""
    m = FDARG.match(arg)
    if not m:
        raise ValueError("not an fd: %r" % arg[:80])
    path = unhex(m.group(2)).decode('utf-8', 'surrogateescape') \
        if m.group(2) is not None else None
    return m.group(1), path


def string_arg(arg):
    if arg.startswith('"'):
        if not arg.endswith('"'):
            raise ValueError("truncated string in the trace: raise -s")
        return unhex(arg)
    return None


def num(arg):
    return int(arg, 0)


def calls(log):
    """(name, args text, result text) in completion order."""
    pending = {}
    with open(log, 'r', encoding='latin-1') as f:
        for raw in f:
            raw = raw.rstrip('\n')
            m = LINE.match(raw)
            if not m:
                continue
            pid, rest = m.group(1), m.group(2)
            if rest.startswith('+++') or rest.startswith('---'):
                continue
            u = UNFIN.match(rest)
            if u:
                pending[pid] = (u.group(1), u.group(2))
                continue
            r = RESUME.match(rest)
            if r:
                name, head = pending.pop(pid, (r.group(1), ''))
                tail = r.group(2)
                yield name, head + tail, r.group(3)
                continue
            c = CALL.match(rest)
            if c:
                yield c.group(1), c.group(2), c.group(3)


def result(res):
    """(return value or None on error, fd path of a -y result or None)."""
    res = res.strip()
    if res.startswith('-1 ') or res == '-1' or res.startswith('?'):
        return None, None
    m = re.match(r'^(-?\d+|0x[0-9a-f]+)(?:<(.*?)>)?', res)
    if not m:
        return None, None
    path = unhex(m.group(2)).decode('utf-8', 'surrogateescape') \
        if m.group(2) is not None else None
    return int(m.group(1), 0), path


# --------------------------------------------------------------- recording

class Recorder:
    """Replays the trace on an in-memory model of WORKDIR (everything
    applied) and emits the event list."""

    def __init__(self, root, files, dirs):
        self.root = root
        self.names = {}       # (dir, name) -> inode id
        self.content = {}     # inode id -> bytearray (all changes applied)
        self.dirs = set(dirs)
        self.next_ino = 0
        for rel, data in files.items():
            ino = self.new_ino()
            d, n = os.path.split(os.path.join(root, rel))
            self.names[(d, n)] = ino
            self.content[ino] = bytearray(data)
        self.fds = {}         # fd -> [kind, inode id or dir path, offset, append]
        self.events = []

    def new_ino(self):
        self.next_ino += 1
        return self.next_ino

    def inside(self, path):
        return path is not None and (path == self.root or
                                     path.startswith(self.root + '/'))

    def resolve(self, dirarg, namearg, cwd):
        name = string_arg(namearg).decode('utf-8', 'surrogateescape')
        if name.startswith('/'):
            p = name
        else:
            base = cwd
            if dirarg is not None:
                fd, dpath = fd_of(dirarg)
                base = dpath if dpath else cwd
            p = os.path.join(base, name)
        return os.path.normpath(p)

    def emit(self, *ev):
        self.events.append(ev)

    # content changes, applied to the model and recorded
    def write(self, ino, off, data):
        if not data:
            return
        c = self.content[ino]
        if len(c) < off:
            c.extend(bytes(off - len(c)))
        c[off:off + len(data)] = data
        self.emit('write', ino, off, bytes(data))

    def trunc(self, ino, size):
        c = self.content[ino]
        if len(c) > size:
            del c[size:]
        else:
            c.extend(bytes(size - len(c)))
        self.emit('trunc', ino, size)

    def zero(self, ino, off, ln, keep):
        c = self.content[ino]
        end = off + ln
        if keep:
            end = min(end, len(c))
        if end > len(c):
            c.extend(bytes(end - len(c)))
        if end > off:
            c[off:end] = bytes(end - off)
        self.emit('zero', ino, off, ln, keep)

    def fdent(self, arg):
        fd, path = fd_of(arg)
        e = self.fds.get(fd)
        if e is None and self.inside(path):
            # opened before tracing, or not seen: look the path up
            ino = self.names.get(os.path.split(path))
            if ino is not None:
                e = self.fds[fd] = ['file', ino, 0, False]
        return fd, e

    def on(self, name, a, res, cwd):
        ret, rpath = result(res)
        if ret is None:
            return
        if name in ('openat', 'open', 'creat'):
            if name == 'openat':
                path = self.resolve(a[0], a[1], cwd)
                flags = a[2]
            elif name == 'open':
                path = self.resolve(None, a[0], cwd)
                flags = a[1]
            else:
                path = self.resolve(None, a[0], cwd)
                flags = 'O_CREAT|O_WRONLY|O_TRUNC'
            if rpath:
                path = rpath
            if not self.inside(path):
                self.fds.pop(str(ret), None)
                return
            if path in self.dirs or 'O_DIRECTORY' in flags:
                self.fds[str(ret)] = ['dir', path, 0, False]
                return
            key = os.path.split(path)
            ino = self.names.get(key)
            if ino is None:
                if 'O_CREAT' not in flags:
                    self.fds.pop(str(ret), None)
                    return
                ino = self.new_ino()
                self.content[ino] = bytearray()
                self.names[key] = ino
                self.emit('create', key[0], key[1], ino)
            elif 'O_TRUNC' in flags and len(self.content[ino]):
                self.trunc(ino, 0)
            self.fds[str(ret)] = ['file', ino, 0, 'O_APPEND' in flags]
        elif name == 'close':
            self.fds.pop(fd_of(a[0])[0], None)
        elif name in ('dup', 'dup2', 'dup3') or (
                name == 'fcntl' and a[1].startswith('F_DUPFD')):
            fd, e = self.fdent(a[0])
            if e is not None:
                self.fds[str(ret)] = e  # shares the offset
            else:
                self.fds.pop(str(ret), None)
        elif name == 'lseek':
            fd, e = self.fdent(a[0])
            if e is not None:
                e[2] = ret
        elif name in ('write', 'pwrite64', 'writev', 'pwritev', 'pwritev2'):
            fd, e = self.fdent(a[0])
            if e is None or e[0] != 'file':
                return
            if name in ('write', 'pwrite64'):
                data = string_arg(a[1])
            else:
                data = b''.join(unhex(m) for m in
                                re.findall(r'iov_base="([^"]*)"', a[1]))
            data = data[:ret]
            if name in ('pwrite64', 'pwritev', 'pwritev2'):
                off = num(a[3])
            elif e[3]:
                off = len(self.content[e[1]])
            else:
                off = e[2]
            self.write(e[1], off, data)
            if name in ('write', 'writev'):
                e[2] = off + len(data)
        elif name == 'ftruncate':
            fd, e = self.fdent(a[0])
            if e is not None and e[0] == 'file':
                self.trunc(e[1], num(a[1]))
        elif name == 'fallocate':
            fd, e = self.fdent(a[0])
            if e is None or e[0] != 'file':
                return
            mode, off, ln = a[1], num(a[2]), num(a[3])
            keep = 'KEEP_SIZE' in mode or 'PUNCH_HOLE' in mode
            if 'PUNCH_HOLE' in mode or 'ZERO_RANGE' in mode:
                self.zero(e[1], off, ln, keep)
            elif not keep and off + ln > len(self.content[e[1]]):
                self.trunc(e[1], off + ln)
        elif name == 'copy_file_range':
            _, src = self.fdent(a[0])
            _, dst = self.fdent(a[2])
            if dst is None or dst[0] != 'file':
                return
            so = int(re.findall(r'-?\d+', a[1])[0]) if a[1] != 'NULL' else src[2]
            do = int(re.findall(r'-?\d+', a[3])[0]) if a[3] != 'NULL' else dst[2]
            if src is None:
                raise ValueError("copy_file_range from outside the directory")
            data = bytes(self.content[src[1]][so:so + ret])
            self.write(dst[1], do, data)
        elif name == 'ioctl':
            if 'FICLONERANGE' in a[1] or 'FICLONE' in a[1]:
                _, dst = self.fdent(a[0])
                if dst is None:
                    return
                m = dict(re.findall(r'(\w+)=(-?\w+)', a[2]))
                srcfd = m.get('src_fd', a[2].split('<')[0])
                src = self.fds.get(srcfd)
                if src is None:
                    raise ValueError("clone from outside the directory")
                sc = self.content[src[1]]
                if 'FICLONERANGE' in a[1]:
                    so, ln, do = (int(m['src_offset'], 0),
                                  int(m['src_length'], 0),
                                  int(m['dest_offset'], 0))
                    if ln == 0:
                        ln = len(sc) - so
                else:
                    so, ln, do = 0, len(sc), 0
                    self.trunc(dst[1], 0)
                self.write(dst[1], do, bytes(sc[so:so + ln]))
        elif name in ('fsync', 'fdatasync', 'syncfs'):
            fd, e = self.fdent(a[0])
            if name == 'syncfs':
                self.emit('sync')
            elif e is None:
                return
            elif e[0] == 'dir':
                self.emit('dirsync', e[1])
            else:
                self.emit('fsync', e[1])
        elif name == 'sync':
            self.emit('sync')
        elif name in ('rename', 'renameat', 'renameat2', 'link', 'linkat'):
            if name in ('rename', 'link'):
                old = self.resolve(None, a[0], cwd)
                new = self.resolve(None, a[1], cwd)
            else:
                old = self.resolve(a[0], a[1], cwd)
                new = self.resolve(a[2], a[3], cwd)
            if not (self.inside(old) or self.inside(new)):
                return
            ok, nk = os.path.split(old), os.path.split(new)
            ino = self.names.get(ok)
            if ino is None:
                return
            if name.startswith('rename'):
                del self.names[ok]
                self.names[nk] = ino
                self.emit('rename', ok[0], ok[1], nk[0], nk[1])
            else:
                self.names[nk] = ino
                self.emit('link', ok[0], ok[1], nk[0], nk[1])
        elif name in ('unlink', 'unlinkat'):
            p = self.resolve(None, a[0], cwd) if name == 'unlink' \
                else self.resolve(a[0], a[1], cwd)
            if not self.inside(p):
                return
            k = os.path.split(p)
            if name == 'unlinkat' and 'AT_REMOVEDIR' in a[2]:
                self.dirs.discard(p)
                self.emit('rmdir', p)
            elif self.names.pop(k, None) is not None:
                self.emit('unlink', k[0], k[1])
        elif name in ('mkdir', 'mkdirat'):
            p = self.resolve(None, a[0], cwd) if name == 'mkdir' \
                else self.resolve(a[0], a[1], cwd)
            if self.inside(p):
                self.dirs.add(p)
                self.emit('mkdir', p)


def snapshot(root):
    files, dirs = {}, {root}
    for d, dn, fn in os.walk(root):
        for x in dn:
            dirs.add(os.path.join(d, x))
        for x in fn:
            p = os.path.join(d, x)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, 'rb') as f:
                    files[os.path.relpath(p, root)] = f.read()
    return files, dirs


def cmd_record(argv):
    root = os.path.realpath(argv[0])
    out = os.path.abspath(argv[1])
    assert argv[2] == '--'
    cmd = argv[3:]
    files, dirs = snapshot(root)
    real0 = {}
    for rel in files:
        st = os.stat(os.path.join(root, rel))
        real0[rel] = (st.st_dev, st.st_ino)
    log = out + '.strace'
    # LeakSanitizer cannot run under ptrace; the untraced re-runs of the
    # same command check for leaks
    env = dict(os.environ)
    env['ASAN_OPTIONS'] = (env.get('ASAN_OPTIONS', '') +
                           ':detect_leaks=0').lstrip(':')
    rc = subprocess.call(['strace', '-f', '-qq', '-xx', '-y',
                          '-s', str(STRACE_MAX), '-o', log,
                          '-e', 'trace=' + TRACE, '--'] + cmd, cwd=root,
                         env=env)
    rec = Recorder(root, files, dirs)
    # real (dev, ino) of the initial files -> our inode ids
    real = {}
    for rel, di in real0.items():
        d, n = os.path.split(os.path.join(root, rel))
        real[di] = rec.names[(d, n)]
    for name, args, res in calls(log):
        a = split_args(args)
        try:
            rec.on(name, a, res, root)
        except (ValueError, IndexError, KeyError) as e:
            sys.exit("crash.py: cannot follow %s(%s) = %s: %s"
                     % (name, args[:200], res, e))
    # the files as the command left them: inode numbers and times
    mtimes = {}
    for (d, n), ino in rec.names.items():
        p = os.path.join(d, n)
        try:
            st = os.stat(p)
        except OSError:
            continue
        real[(st.st_dev, st.st_ino)] = ino
        mtimes[ino] = st.st_mtime_ns
    os.unlink(log)
    with open(out, 'wb') as f:
        pickle.dump({'root': root, 'files': files, 'dirs': sorted(dirs),
                     'events': rec.events, 'real': real, 'mtimes': mtimes,
                     'initial_inos': {os.path.split(os.path.join(root, r)):
                                      real[real0[r]] for r in files}},
                    f, protocol=4)
    return rc


# -------------------------------------------------------------- generating

def durable_flags(events, k):
    """durable[i] for events[:k]: a later sync of its file / directory."""
    dur = [False] * k
    synced_files, synced_dirs, all_synced = set(), set(), False
    for i in range(k - 1, -1, -1):
        ev = events[i]
        t = ev[0]
        if t == 'sync':
            all_synced = True
        elif t == 'fsync':
            synced_files.add(ev[1])
        elif t == 'dirsync':
            synced_dirs.add(ev[1])
        elif t in ('write', 'trunc', 'zero'):
            dur[i] = all_synced or ev[1] in synced_files
        elif t in ('create', 'unlink'):
            dur[i] = all_synced or ev[1] in synced_dirs
        elif t in ('rename', 'link'):
            dur[i] = all_synced or (ev[1] in synced_dirs and
                                    ev[3] in synced_dirs)
        elif t in ('mkdir', 'rmdir'):
            dur[i] = all_synced or os.path.dirname(ev[1]) in synced_dirs
    return dur


def crash_state(rec, k, seed):
    """(names {(dir, name): inode}, contents {inode: bytearray}, dirs)"""
    events = rec['events']
    dur = durable_flags(events, k)
    rng = random.Random(k * 1000003 + seed)
    names = dict(rec['initial_inos'])
    content = {}
    for (d, n), ino in names.items():
        content[ino] = bytearray(rec['files'][os.path.relpath(
            os.path.join(d, n), rec['root'])])
    dirs = set(rec['dirs'])
    for i in range(k):
        ev = events[i]
        t = ev[0]
        if t in ('fsync', 'dirsync', 'sync'):
            continue
        mode = 'all'
        if not dur[i]:
            if seed == 0:
                continue
            if seed != 1:
                r = rng.random()
                mode = 'skip' if r < 0.4 else 'all' if r < 0.75 else 'torn'
                if mode == 'skip':
                    continue
        if t == 'write':
            ino, off, data = ev[1], ev[2], ev[3]
            c = content.setdefault(ino, bytearray())
            end = off + len(data)
            if len(c) < end:
                c.extend(bytes(end - len(c)))
            if mode == 'torn':
                s = off
                while s < end:
                    e = min(end, (s // SECTOR + 1) * SECTOR)
                    if rng.random() < 0.5:
                        c[s:e] = data[s - off:e - off]
                    s = e
            else:
                c[off:end] = data
        elif t == 'trunc':
            c = content.setdefault(ev[1], bytearray())
            if len(c) > ev[2]:
                del c[ev[2]:]
            else:
                c.extend(bytes(ev[2] - len(c)))
        elif t == 'zero':
            c = content.setdefault(ev[1], bytearray())
            off, ln, keep = ev[2], ev[3], ev[4]
            end = min(off + ln, len(c)) if keep else off + ln
            if end > len(c):
                c.extend(bytes(end - len(c)))
            if end > off:
                c[off:end] = bytes(end - off)
        elif t == 'create':
            content.setdefault(ev[3], bytearray())
            if ev[1] in dirs:
                names[(ev[1], ev[2])] = ev[3]
        elif t in ('rename', 'link'):
            ino = names.get((ev[1], ev[2]))
            if ino is None or ev[3] not in dirs:
                continue  # its precondition does not hold here
            if t == 'rename':
                del names[(ev[1], ev[2])]
            names[(ev[3], ev[4])] = ino
        elif t == 'unlink':
            names.pop((ev[1], ev[2]), None)
        elif t == 'mkdir':
            dirs.add(ev[1])
        elif t == 'rmdir':
            if not any(d == ev[1] for d, _ in names):
                dirs.discard(ev[1])
    # content of inodes created but never reached by a surviving name does
    # not matter; content of the initial files is there from the start
    for ino in set(names.values()):
        content.setdefault(ino, bytearray())
    return names, content, dirs


def digest(names, content):
    h = hashlib.sha1()
    for key in sorted(names):
        h.update(repr(key).encode())
        h.update(hashlib.sha1(content[names[key]]).digest())
    return h.hexdigest()


ID = re.compile(rb'(?<![0-9])([0-9]+):([0-9]+)(?![0-9])')


def write_state(rec, names, content, dirs, out):
    root = rec['root']
    os.makedirs(out)
    for d in sorted(dirs):
        os.makedirs(os.path.join(out, os.path.relpath(d, root)),
                    exist_ok=True)
    first = {}
    for key in sorted(names):
        ino = names[key]
        p = os.path.join(out, os.path.relpath(os.path.join(*key), root))
        if ino in first:
            os.link(first[ino], p)
            continue
        with open(p, 'wb') as f:
            f.write(content[ino])
        first[ino] = p
    # inode identity: ours -> the state's files
    new = {}
    for ino, p in first.items():
        st = os.stat(p)
        new[ino] = (st.st_dev, st.st_ino)
    real = rec['real']

    def sub(m):
        ino = real.get((int(m.group(1)), int(m.group(2))))
        if ino is None or ino not in new:
            return m.group(0)
        return b'%d:%d' % new[ino]
    for ino, p in first.items():
        if '.qchain-commit' in os.path.basename(p):
            with open(p, 'rb') as f:
                data = f.read()
            data2 = ID.sub(sub, data)
            if data2 != data:
                with open(p, 'wb') as f:
                    f.write(data2)
    for ino, p in first.items():
        if ino in rec['mtimes']:
            os.utime(p, ns=(rec['mtimes'][ino], rec['mtimes'][ino]))


def load(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def cmd_state(argv):
    rec = load(argv[0])
    k, seed, out = int(argv[1]), int(argv[2]), argv[3]
    names, content, dirs = crash_state(rec, k, seed)
    write_state(rec, names, content, dirs, out)


def sync_points(events):
    pts = []
    for i, ev in enumerate(events):
        if ev[0] in ('fsync', 'dirsync', 'sync'):
            pts += [i, i + 1]
    return pts


def cmd_states(argv):
    rec = load(argv[0])
    out, cap = argv[1], int(argv[2])
    rng = random.Random(int(argv[3]) if len(argv) > 3 else 1)
    events = rec['events']
    n = len(events)
    # the end first (power loss right after the command), then the points
    # around directory syncs and entry changes, then file syncs, then random
    dirpts, filepts = [n], []
    for i, ev in enumerate(events):
        if ev[0] in ('dirsync', 'sync', 'create', 'rename', 'unlink', 'link'):
            dirpts += [i, i + 1]
        elif ev[0] == 'fsync':
            filepts += [i, i + 1]
    cand = []
    for p in dirpts:
        cand += [(p, 0), (p, 1)]
    fp = sorted(set(filepts))
    if len(fp) > cap:  # evenly spread over the run
        fp = [fp[int(j * len(fp) / cap)] for j in range(cap)]
    for p in fp:
        cand += [(p, 0), (p, 1)]
    for _ in range(cap * 4):
        cand.append((rng.randint(0, n), rng.randint(2, 1 << 30)))
    os.makedirs(out, exist_ok=True)
    seen, made = set(), 0
    with open(os.path.join(out, 'list'), 'w') as lst:
        for p, s in cand:
            if made >= cap:
                break
            names, content, dirs = crash_state(rec, p, s)
            d = digest(names, content)
            if d in seen:
                continue
            seen.add(d)
            write_state(rec, names, content, dirs,
                        os.path.join(out, 's%d' % made))
            lst.write('%d %d %d\n' % (made, p, s))
            made += 1
    print("%d events, %d sync points, %d distinct states"
          % (n, len(sync_points(events)) // 2, made))


def cmd_summary(argv):
    rec = load(argv[0])
    root = rec['root']
    for i, ev in enumerate(rec['events']):
        show = [x if not isinstance(x, bytes) else '<%d bytes>' % len(x)
                for x in ev]
        show = [os.path.relpath(x, root) if isinstance(x, str) and
                x.startswith(root) else x for x in show]
        print(i, *show)


def cmd_leak(argv):
    """Two clusters past the end counted as used (a 16-bit refcount
    image whose file end lies in the first refcount block)."""
    import struct
    with open(argv[0], 'r+b') as f:
        h = f.read(104)
        cbits = struct.unpack('>I', h[20:24])[0]
        rt = struct.unpack('>Q', h[48:56])[0]
        order = struct.unpack('>I', h[96:100])[0]
        assert order == 4, "16-bit refcounts only"
        cs = 1 << cbits
        f.seek(0, 2)
        size = f.tell()
        n = (size + cs - 1) // cs
        assert n + 2 <= cs // 2
        f.seek(rt)
        rb = struct.unpack('>Q', f.read(8))[0]
        for c in (n, n + 1):
            f.seek(rb + 2 * c)
            f.write(struct.pack('>H', 1))
        f.truncate((n + 2) * cs)


def main():
    cmd, argv = sys.argv[1], sys.argv[2:]
    r = {'record': cmd_record, 'state': cmd_state, 'states': cmd_states,
         'summary': cmd_summary, 'leak': cmd_leak}[cmd](argv)
    sys.exit(r or 0)


if __name__ == '__main__':
    main()
