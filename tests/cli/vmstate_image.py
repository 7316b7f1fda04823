#!/usr/bin/env python3
"""vmstate_image.py - qcow2 images whose internal snapshots carry VM state,
laid out the way QEMU's savevm lays it out, with QEMU doing every write.

qemu-io has no savevm, so the VM state is written where savevm writes it
(guest offsets from vm_state_offset = the first L1 index past the disk
size, shifted by cluster_bits + l2_bits) by growing the image over that
range first:

  1. qemu-img create -f qcow2 [-o OPTS] IMG SIZE; guest data at 0;
  2. qemu-img resize IMG VMOFF + room (the L1 table now reaches the VM
     state range, as savevm makes it reach);
  3. per snapshot: qemu-io writes its VM state at VMOFF (data, random
     data, compressed clusters, zero clusters, holes); qemu-img snapshot
     -c NAME (the snapshot's L1 copy references it); qemu-img convert -l
     NAME reads it back through QEMU (the expected bytes); qemu-io discard
     of the range in the active image (what qcow2_snapshot_create does
     after savevm);
  4. three numbers are patched, nothing else: the header's size back to
     SIZE, and in each snapshot entry disk_size = SIZE and vm_state_size
     (32-bit field and 64-bit extra field) = the state's length;
  5. qemu-img check must find the image clean, and qemu-img info must
     report each vm-state-size.

Usage: vmstate_image.py SCENARIO OUTDIR
Writes OUTDIR/SCENARIO.qcow2, OUTDIR/SCENARIO.SNAP.vmstate (expected bytes)
and prints one line per snapshot: "SNAP VM_STATE_SIZE VMOFF".
"""
import json
import os
import random
import struct
import subprocess
import sys

QEMU_IMG = os.environ.get("QEMU_IMG") or "qemu-img"
QEMU_IO = os.environ.get("QEMU_IO") or "qemu-io"

K = 1024
M = 1024 * 1024

# scenario -> (create options, disk size, [(snapshot, vm_state_size,
#              [(qemu-io command, offset in the VM state, length)])])
SCENARIOS = {
    # 64 KiB clusters: the VM state starts at 512 MiB; data, random data,
    # a compressed cluster, a zero cluster, a hole; the size ends inside a
    # cluster; a second snapshot with other content; one without state
    "c64k": ("cluster_size=65536", 4 * M, [
        ("vm1", 300 * K + 123, [
            ("write -P 0x5a", 0, 64 * K),
            ("write -s {rand}", 64 * K, 64 * K),
            ("write -c -P 0x3c", 128 * K, 64 * K),
            ("write -z", 192 * K, 64 * K),
            ("write -P 0x77", 288 * K, 12 * K),
        ]),
        ("vm2", 200 * K, [
            ("write -P 0xa5", 0, 200 * K),
        ]),
        ("novm", 0, []),
    ]),
    # 4 KiB clusters: L2 tables span 2 MiB, so the VM state (at 4 MiB,
    # the disk size itself) crosses several L1 entries
    "c4k": ("cluster_size=4096", 4 * M, [
        ("s1", 5 * M + 4097, [
            ("write -P 0x11", 0, 1 * M),
            ("write -s {rand}", 1 * M, 64 * K),
            ("write -c -P 0x22", 2 * M, 64 * K),
            ("write -P 0x33", 4 * M, 1 * M),
            ("write -P 0x44", 5 * M, 4097),
        ]),
    ]),
    # version 2 (compat=0.10): no zero clusters
    "v2": ("compat=0.10,cluster_size=65536", 3 * M + 512, [
        ("old", 130 * K, [
            ("write -P 0x66", 0, 130 * K),
        ]),
    ]),
    # 512-byte clusters, a 64 KiB disk: a KiB-sized image (the fuzz seed
    # of fuzz_open_map's VM-state reads, fuzz/make-seeds.sh)
    "tiny": ("cluster_size=512", 64 * K, [
        ("t", 3 * K + 100, [
            ("write -P 0x7e", 0, 1 * K),
            ("write -c -P 0x7f", 1 * K, 512),
            ("write -z", 2 * K, 512),
            ("write -P 0x70", 3 * K, 100),
        ]),
    ]),
    # extended L2 entries: subclusters of 2 KiB, a partial cluster
    "extl2": ("extended_l2=on,cluster_size=65536", 4 * M, [
        ("x", 100 * K, [
            ("write -P 0x99", 0, 6 * K),
            ("write -P 0x98", 64 * K, 36 * K),
        ]),
    ]),
}


def run(*args, capture=False):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = r.stdout.decode()
    if r.returncode != 0 or "failed" in out.lower() or "error" in out.lower():
        sys.exit("command failed: %s\n%s" % (" ".join(args), out))
    return out


def qio(img, *cmds):
    args = [QEMU_IO, "-f", "qcow2"]
    for c in cmds:
        args += ["-c", c]
    run(*args, img)


def geometry(img):
    with open(img, "rb") as f:
        h = f.read(112)
    cbits = struct.unpack(">I", h[20:24])[0]
    incompat = struct.unpack(">Q", h[72:80])[0] if len(h) >= 80 else 0
    extl2 = struct.unpack(">I", h[4:8])[0] >= 3 and (incompat >> 4) & 1
    l2bits = cbits - (4 if extl2 else 3)
    return cbits, l2bits


def snapshot_entries(f):
    """Yield (entry offset, extra_data_size) of every snapshot entry."""
    f.seek(60)
    n, off = struct.unpack(">IQ", f.read(12))
    for _ in range(n):
        f.seek(off)
        e = f.read(40)
        id_len, name_len = struct.unpack(">HH", e[12:16])
        extra = struct.unpack(">I", e[36:40])[0]
        yield off, extra
        off += 40 + extra + id_len + name_len
        off = (off + 7) & ~7


def main():
    scenario, outdir = sys.argv[1], sys.argv[2]
    opts, size, snaps = SCENARIOS[scenario]
    img = os.path.join(outdir, scenario + ".qcow2")
    rand = os.path.join(outdir, scenario + ".rand")
    r = random.Random(6)
    with open(rand, "wb") as f:
        f.write(bytes(r.getrandbits(8) for _ in range(64 * K)))

    run(QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", opts, img, str(size))
    qio(img, "write -P 0xd1 0 64k", "write -P 0xd2 %d 512" % (size - 512))
    cbits, l2bits = geometry(img)
    span = 1 << (cbits + l2bits)
    vmoff = (size + span - 1) // span * span
    room = max(s[1] for s in snaps)
    run(QEMU_IMG, "resize", "-q", "-f", "qcow2", img,
        str(vmoff + (room + 65535) // 65536 * 65536))

    sizes = {}
    for name, vmsize, cmds in snaps:
        if cmds:
            qio(img, *["%s %d %d" % (op.format(rand=rand), vmoff + off, n)
                       for op, off, n in cmds])
        run(QEMU_IMG, "snapshot", "-c", name, img)
        # QEMU's own reading of the snapshot, sliced: the expected state
        full = os.path.join(outdir, "full.raw")
        run(QEMU_IMG, "convert", "-l", name, "-O", "raw", img, full)
        with open(full, "rb") as f:
            f.seek(vmoff)
            data = f.read(vmsize)
        os.unlink(full)
        assert len(data) == vmsize, (name, len(data))
        with open(os.path.join(outdir, "%s.%s.vmstate" % (scenario, name)),
                  "wb") as f:
            f.write(data)
        if vmsize:
            qio(img, "discard %d %d" % (vmoff, (vmsize + 65535) // 65536
                                        * 65536))
        sizes[name] = vmsize

    # the three patches: header size, each entry's disk size and VM state
    with open(img, "r+b") as f:
        f.seek(24)
        f.write(struct.pack(">Q", size))
        for (off, extra), (name, vmsize, _) in zip(list(snapshot_entries(f)),
                                                    snaps):
            f.seek(off + 32)
            f.write(struct.pack(">I", vmsize & 0xffffffff))
            if extra >= 8:
                f.seek(off + 40)
                f.write(struct.pack(">Q", vmsize))
            if extra >= 16:
                f.seek(off + 48)
                f.write(struct.pack(">Q", size))

    out = subprocess.run([QEMU_IMG, "check", img], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    if out.returncode != 0 or b"No errors were found" not in out.stdout:
        sys.exit("qemu-img check %s:\n%s" % (img, out.stdout.decode()))
    info = json.loads(run(QEMU_IMG, "info", "--output=json", img))
    assert info["virtual-size"] == size, info["virtual-size"]
    got = {s["name"]: s["vm-state-size"] for s in info.get("snapshots", [])}
    assert got == sizes, (got, sizes)
    os.unlink(rand)
    for name, vmsize, _ in snaps:
        print(name, vmsize, vmoff)



if __name__ == "__main__":
    main()
