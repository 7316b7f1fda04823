#!/usr/bin/env python3
"""make-bad-images.py - regenerate tests/images/bad/*.qcow2 and README.md.

Every bad image starts as a small, valid image made by qemu-img/qemu-io
(cluster size 4096 and a 1 MiB virtual size, so each file is a few KiB),
then gets its damage from byte pokes at documented offsets (struct.pack,
big-endian as qcow2 is).  Each poke is recorded and written to README.md
with the old and new value, so the README always says exactly what is
wrong with each file.

Usage: make-bad-images.py [--check]
  (no option)  rewrite bad/*.qcow2 and README.md next to this script
  --check      regenerate into a temporary directory and compare with the
               committed files (exit 1 if they differ)

Needs qemu-img and qemu-io (7.2 was used).  The output is deterministic:
qemu-img writes no timestamps except in snapshot entries, which are poked
to fixed values.

qcow2 header (v3), offsets used below:
    0  magic (u32)               36  l1_size (u32)
    4  version (u32)             40  l1_table_offset (u64)
    8  backing_file_offset (u64) 48  refcount_table_offset (u64)
   16  backing_file_size (u32)   56  refcount_table_clusters (u32)
   20  cluster_bits (u32)        60  nb_snapshots (u32)
   24  size (u64)                64  snapshots_offset (u64)
   32  crypt_method (u32)        72  incompatible_features (u64)
   96  refcount_order (u32)     100  header_length (u32)
  104  compression_type (u8)    112  first header extension (v3 default)

The base image `plain` (qemu-img create -f qcow2 -o cluster_size=4096
plain.qcow2 1M; qemu-io -c 'write -P 0x5a 0 4k' -c 'write -P 0xa5 64k 4k')
has this layout, asserted below: header 0x0, refcount table 0x1000,
refcount block 0x2000, L1 table 0x3000 (1 entry), L2 table 0x4000, data
of guest offset 0 at 0x5000 and of guest offset 64k at 0x6000; the file is
0x7000 bytes.  L1[0] is at 0x3000, L2[0] (guest 0) at 0x4000, L2[16]
(guest 64k) at 0x4080.
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
QEMU_IMG = os.environ.get("QEMU_IMG", "qemu-img")
QEMU_IO = os.environ.get("QEMU_IO", "qemu-io")

COPIED = 1 << 63
COMPRESSED = 1 << 62
PAST_END = 0x10000000  # 256 MiB: far past the end of every file here

# ------------------------------------------------------------ plumbing

LOG = {}      # image name -> list of poke descriptions
CURRENT = []  # the log of the image being made


def run(*args):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0 or b"failed" in r.stdout:
        sys.exit("command failed: %s\n%s" % (" ".join(args), r.stdout.decode()))


def qimg(*args):
    run(QEMU_IMG, *args)


def qio(path, *cmds):
    args = [QEMU_IO, "-f", "qcow2"]
    for c in cmds:
        args += ["-c", c]
    run(*args, path)


def read(path, off, fmt):
    with open(path, "rb") as f:
        f.seek(off)
        return struct.unpack(">" + fmt, f.read(struct.calcsize(">" + fmt)))[0]


def poke(path, off, fmt, value, what):
    """Write value (struct format fmt, big-endian) at off; log it."""
    size = struct.calcsize(">" + fmt)
    with open(path, "r+b") as f:
        f.seek(off)
        old = f.read(size)
        f.seek(off)
        f.write(struct.pack(">" + fmt, value))
    if fmt in ("B", "H", "I", "Q"):
        oldv = "0x%x" % struct.unpack(">" + fmt, old.ljust(size, b"\0"))[0]
        CURRENT.append("offset 0x%x (%s, %d bytes): %s -> 0x%x"
                       % (off, what, size, oldv, value))
    else:
        CURRENT.append("offset 0x%x (%s, %d bytes) rewritten" % (off, what, size))


def poke_bytes(path, off, data, what):
    with open(path, "r+b") as f:
        f.seek(off)
        old = f.read(len(data))
        f.seek(off)
        f.write(data)
    shown = data if len(data) <= 24 else data[:20] + b"..."
    CURRENT.append("offset 0x%x (%s, %d bytes): %r -> %r"
                   % (off, what, len(data), old[:24], shown))


def truncate(path, size):
    old = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size)
    CURRENT.append("file truncated from 0x%x to 0x%x bytes" % (old, size))


def note(text):
    CURRENT.append(text)


# -------------------------------------------------------- base images

def plain(path):
    """The base image described in the module docstring."""
    qimg("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", path, "1M")
    qio(path, "write -P 0x5a 0 4k", "write -P 0xa5 64k 4k")
    assert os.path.getsize(path) == 0x7000, os.path.getsize(path)
    assert read(path, 40, "Q") == 0x3000          # L1 table
    assert read(path, 0x3000, "Q") == COPIED | 0x4000  # L1[0] -> L2
    assert read(path, 0x4000, "Q") == COPIED | 0x5000  # L2[0] -> data
    assert read(path, 0x4080, "Q") == COPIED | 0x6000  # L2[16] -> data


def with_backing(path, name, fmt="qcow2"):
    """qemu-img create -u -b NAME -F FMT: no data, backing name only."""
    qimg("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-u",
         "-b", name, "-F", fmt, path, "1M")


def compressed(path, ctype):
    """plain, then qemu-img convert -c -O qcow2 -o cluster_size=4096,
    compression_type=CTYPE: guest 0 and 64k are compressed clusters."""
    src = path + ".src"
    plain(src)
    qimg("convert", "-c", "-O", "qcow2", "-o",
         "cluster_size=4096,compression_type=" + ctype, src, path)
    os.unlink(src)


def l2_entry_offset(path, guest):
    """File offset of the L2 entry mapping guest offset (4k clusters)."""
    l1 = read(path, 40, "Q")
    l2 = read(path, l1, "Q") & 0x00fffffffffffe00
    return l2 + (guest // 4096) * 8


def snapshotted(path):
    """plain + qemu-img snapshot -c s1, dates poked to fixed values."""
    plain(path)
    qimg("snapshot", "-c", "s1", path)
    off = read(path, 64, "Q")
    # entry: l1 offset (8), l1 size (4), id size (2), name size (2),
    # date_sec (4) at +16, date_nsec (4) at +20
    with open(path, "r+b") as f:
        f.seek(off + 16)
        f.write(struct.pack(">II", 1700000000, 0))
    return off


def vmstated(path):
    """A 1 MiB image (4 KiB clusters, so L2 tables span 2 MiB and the VM
    state starts at 2 MiB) whose snapshot s1 carries 8 KiB of VM state,
    laid out as savevm does with QEMU doing the writes: grow the image
    over the VM state range, write it (0x5a), qemu-img snapshot -c s1,
    discard it from the active image (as qcow2_snapshot_create does), then
    set the header size back to 1 MiB and the entry's disk_size and
    vm_state_size (both fields); qemu-img check finds it clean.  Returns
    the snapshot entry's offset."""
    qimg("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", path, "1M")
    qio(path, "write -P 0xa5 0 4k")
    qimg("resize", "-q", "-f", "qcow2", path, str(2 * 1024 * 1024 + 8192))
    qio(path, "write -P 0x5a 2M 8k")
    qimg("snapshot", "-c", "s1", path)
    qio(path, "discard 2M 8k")
    off = read(path, 64, "Q")
    with open(path, "r+b") as f:
        f.seek(24)
        f.write(struct.pack(">Q", 1024 * 1024))
        f.seek(off + 16)
        f.write(struct.pack(">II", 1700000000, 0))
        f.seek(off + 32)
        f.write(struct.pack(">I", 8192))
        assert read(path, off + 36, "I") >= 16
        f.seek(off + 40)
        f.write(struct.pack(">QQ", 8192, 1024 * 1024))
    r = subprocess.run([QEMU_IMG, "check", path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    assert r.returncode == 0, r.stdout
    return off


def snapshot_l1_entry(path, entry, index):
    """File offset of entry `index` of the L1 table of the snapshot whose
    table entry is at `entry`."""
    return read(path, entry, "Q") + index * 8


# ------------------------------------------------------------ the images
#
# (name, kind, what is wrong, function(path)).  Kinds, for bad_images.sh
# and the README:
#   header  damage in the header, extensions or snapshot table: every
#           command, qchain-info included, must refuse the file
#   data    damage in tables or data qchain-info does not read: qchain-map
#           and qchain-export refuse the file, qchain-info shows it (also
#           with --backing-chain)
#   chain   the header is fine but the backing chain cannot be followed:
#           qchain-info shows the image, --backing-chain / map / export
#           refuse it
#   decode  only the compressed data is bad: only qchain-export (which
#           decompresses) refuses it
#   snap    only one snapshot is bad: only export -s of it refuses it
#   vmstate only the VM state of snapshot s1 is bad: only export
#           --vmstate s1 refuses it

IMAGES = []


def image(name, kind, what):
    def reg(fn):
        IMAGES.append((name, kind, what, fn))
        return fn
    return reg


@image("truncated-header", "header",
       "the file ends after 48 bytes, inside the header")
def _(p):
    plain(p)
    truncate(p, 48)


@image("truncated-header-v3", "header",
       "the file ends at byte 104, before the compression type byte and the "
       "extension area that header_length (112) says are there")
def _(p):
    plain(p)
    truncate(p, 104)


@image("version-4", "header", "version 4 does not exist")
def _(p):
    plain(p)
    poke(p, 4, "I", 4, "version")


@image("cluster-bits-8", "header", "cluster_bits 8 is below the minimum 9")
def _(p):
    plain(p)
    poke(p, 20, "I", 8, "cluster_bits")


@image("cluster-bits-22", "header", "cluster_bits 22 is above the maximum 21")
def _(p):
    plain(p)
    poke(p, 20, "I", 22, "cluster_bits")


@image("cluster-bits-64", "header",
       "cluster_bits 64: a shift by 64 if unchecked (undefined behaviour)")
def _(p):
    plain(p)
    poke(p, 20, "I", 64, "cluster_bits")


@image("header-length-short", "header",
       "header_length 100 is shorter than the 104 bytes every v3 header has")
def _(p):
    plain(p)
    poke(p, 100, "I", 100, "header_length")


@image("header-length-long", "header",
       "header_length 0x2000 is larger than the 4096-byte cluster")
def _(p):
    plain(p)
    poke(p, 100, "I", 0x2000, "header_length")


@image("ext-length-overflow", "header",
       "a header extension (unknown type 0x1234abcd) at 0x70 claims "
       "0xfffffff0 bytes: offset + length overflows 32 bits and runs past "
       "the cluster")
def _(p):
    plain(p)
    poke(p, 0x70, "I", 0x1234abcd, "extension type")
    poke(p, 0x74, "I", 0xfffffff0, "extension length")


@image("ext-past-cluster", "header",
       "a header extension (unknown type 0x1234abcd) at 0x70 claims 0x1000 "
       "bytes, past the end of the header cluster")
def _(p):
    plain(p)
    poke(p, 0x70, "I", 0x1234abcd, "extension type")
    poke(p, 0x74, "I", 0x1000, "extension length")


@image("unknown-incompat-bit", "header",
       "incompatible feature bit 40 (unknown) is set")
def _(p):
    plain(p)
    poke(p, 72, "Q", 1 << 40, "incompatible_features")


@image("refcount-order-7", "header",
       "refcount_order 7 (128-bit refcounts) is above the maximum 6")
def _(p):
    plain(p)
    poke(p, 96, "I", 7, "refcount_order")


@image("size-huge", "header",
       "virtual size 2^62: needs a far larger L1 table than l1_size 1 (and "
       "overflows size arithmetic if unchecked)")
def _(p):
    plain(p)
    poke(p, 24, "Q", 1 << 62, "size")


@image("l1-size-huge", "header",
       "l1_size 0x7fffffff: a 16 GiB L1 table (QEMU's limit is 32 MiB), far "
       "past the end of the file")
def _(p):
    plain(p)
    poke(p, 36, "I", 0x7fffffff, "l1_size")


@image("l1-size-zero", "header",
       "l1_size 0 for a 1 MiB image, which needs one L1 entry")
def _(p):
    plain(p)
    poke(p, 36, "I", 0, "l1_size")


@image("l1-past-end", "header",
       "l1_table_offset 0x10000000, past the end of the 28 KiB file")
def _(p):
    plain(p)
    poke(p, 40, "Q", PAST_END, "l1_table_offset")


@image("l1-unaligned", "header",
       "l1_table_offset 0x3200 is not cluster aligned")
def _(p):
    plain(p)
    poke(p, 40, "Q", 0x3200, "l1_table_offset")


@image("l2-past-end", "data",
       "L1[0] points to an L2 table at 0x10000000, past the end of the file")
def _(p):
    plain(p)
    poke(p, 0x3000, "Q", COPIED | PAST_END, "L1[0]")


@image("l2-unaligned", "data",
       "L1[0] points to an L2 table at 0x4200, not cluster aligned")
def _(p):
    plain(p)
    poke(p, 0x3000, "Q", COPIED | 0x4200, "L1[0]")


@image("data-past-end", "data",
       "L2[0] maps guest offset 0 to host cluster 0x10000000, past the end "
       "of the file")
def _(p):
    plain(p)
    poke(p, 0x4000, "Q", COPIED | PAST_END, "L2[0]")


@image("data-unaligned", "data",
       "L2[0] maps guest offset 0 to host offset 0x5200, not cluster "
       "aligned")
def _(p):
    plain(p)
    poke(p, 0x4000, "Q", COPIED | 0x5200, "L2[0]")


@image("compressed-past-end", "data",
       "zlib-compressed image (qemu-img convert -c); the compressed "
       "descriptor L2[0] points 64 KiB past the end of the file (same sector "
       "count)")
def _(p):
    compressed(p, "zlib")
    e = l2_entry_offset(p, 0)
    desc = read(p, e, "Q")
    assert desc & COMPRESSED
    # 4 KiB clusters: host offset in bits 0..57, sector count in 58..61
    nsec = (desc >> 58) & 0xf
    new = COMPRESSED | (nsec << 58) | (os.path.getsize(p) + 0x10000)
    poke(p, e, "Q", new, "L2[0], compressed descriptor")


@image("compressed-offset-huge", "data",
       "zlib-compressed image; L2[0] is a compressed descriptor whose host "
       "offset field (bits 0-57) is all ones, the largest sector count too")
def _(p):
    compressed(p, "zlib")
    e = l2_entry_offset(p, 0)
    poke(p, e, "Q", COMPRESSED | (0xf << 58) | ((1 << 58) - 1),
         "L2[0], compressed descriptor")


@image("compressed-garbage-zlib", "decode",
       "zlib-compressed image; the first 16 bytes of guest cluster 0's "
       "compressed data are 0xff (deflate block type 3: invalid)")
def _(p):
    compressed(p, "zlib")
    e = l2_entry_offset(p, 0)
    off = read(p, e, "Q") & ((1 << 58) - 1)
    poke_bytes(p, off, b"\xff" * 16, "compressed data of guest cluster 0")


@image("compressed-garbage-zstd", "decode",
       "zstd-compressed image (compression_type=zstd); the first 16 bytes of "
       "guest cluster 0's compressed data (the zstd frame magic and header) "
       "are 0xff")
def _(p):
    compressed(p, "zstd")
    e = l2_entry_offset(p, 0)
    off = read(p, e, "Q") & ((1 << 58) - 1)
    poke_bytes(p, off, b"\xff" * 16, "compressed data of guest cluster 0")


@image("snapshot-count-huge", "header",
       "image with one snapshot (qemu-img snapshot -c s1); nb_snapshots "
       "0x7fffffff (QEMU's limit is 65536; the table would be far past the "
       "end of the file)")
def _(p):
    snapshotted(p)
    poke(p, 60, "I", 0x7fffffff, "nb_snapshots")


@image("snapshot-offset-past-end", "snaptable",
       "image with one snapshot; snapshots_offset 0x10000000, past the end "
       "of the file")
def _(p):
    snapshotted(p)
    poke(p, 64, "Q", PAST_END, "snapshots_offset")


@image("snapshot-offset-unaligned", "header",
       "image with one snapshot; snapshots_offset moved 0x200 bytes back, off "
       "its cluster boundary (still inside the file)")
def _(p):
    off = snapshotted(p)
    poke(p, 64, "Q", off - 0x200, "snapshots_offset")


@image("snapshot-name-past-end", "snaptable",
       "image with one snapshot; the entry's name_size is 0xffff, so the name "
       "runs past the end of the file")
def _(p):
    off = snapshotted(p)
    poke(p, off + 14, "H", 0xffff, "snapshot[0] name_size")


@image("snapshot-l1-past-end", "snap",
       "image with one snapshot (s1); the snapshot's L1 table offset is "
       "0x10000000, past the end of the file (the active image is fine)")
def _(p):
    off = snapshotted(p)
    poke(p, off, "Q", PAST_END, "snapshot[0] l1_table_offset")


@image("backing-name-long", "header",
       "backing file name of 1100 bytes ('a' * 1094 + '.qcow2'); QEMU's limit "
       "is 1023")
def _(p):
    with_backing(p, "base.qcow2")
    boff = read(p, 8, "Q")
    name = b"a" * 1094 + b".qcow2"
    poke_bytes(p, boff, name, "backing file name")
    poke(p, 16, "I", len(name), "backing_file_size")


@image("backing-offset-overflow", "header",
       "backing_file_offset 0xfffffffffffffff0: offset + size overflows")
def _(p):
    with_backing(p, "base.qcow2")
    poke(p, 8, "Q", 0xfffffffffffffff0, "backing_file_offset")


@image("backing-self", "chain",
       "backing file name is 'backing-self.qcow2', the image itself (made "
       "with -b XXXXXXXXXXXX.qcow2 -F qcow2, then the name overwritten)")
def _(p):
    with_backing(p, "XXXXXXXXXXXX.qcow2")
    boff = read(p, 8, "Q")
    poke_bytes(p, boff, b"backing-self.qcow2", "backing file name")


@image("backing-loop-a", "chain",
       "backing file is backing-loop-b.qcow2, whose backing file is this one "
       "(qemu-img create -f qcow2 -o cluster_size=4096 -u -b "
       "backing-loop-b.qcow2 -F qcow2 backing-loop-a.qcow2 1M; no pokes)")
def _(p):
    with_backing(p, "backing-loop-b.qcow2")


@image("backing-loop-b", "chain",
       "backing file is backing-loop-a.qcow2 (see backing-loop-a; no pokes)")
def _(p):
    with_backing(p, "backing-loop-a.qcow2")


@image("backing-loop-3", "chain",
       "backing-loop-3 -> backing-loop-a -> backing-loop-b -> backing-loop-a: "
       "the loop does not include the top image (no pokes)")
def _(p):
    with_backing(p, "backing-loop-a.qcow2")


@image("backing-nbd", "chain",
       "backing file name 'nbd:localhost:10809' (a protocol; qemu-img "
       "create -u -b nbd:localhost:10809 -F raw; no pokes)")
def _(p):
    with_backing(p, "nbd:localhost:10809", "raw")


@image("backing-nbd-uri", "chain",
       "backing file name 'nbd://127.0.0.1:10809/export' (no pokes)")
def _(p):
    with_backing(p, "nbd://127.0.0.1:10809/export", "raw")


@image("backing-json", "chain",
       "backing file name 'json:{\"driver\":\"raw\",\"file\":{\"driver\":"
       "\"file\",\"filename\":\"/etc/hostname\"}}' (no pokes)")
def _(p):
    with_backing(p, 'json:{"driver":"raw","file":{"driver":"file",'
                    '"filename":"/etc/hostname"}}', "raw")


@image("vmstate-size-past-l1", "vmstate",
       "snapshot s1 carries 8 KiB of VM state (see `vmstated`); its "
       "vm_state_size is 3 MiB, more than its L1 table maps past the disk "
       "(one L2 table: 2 MiB)")
def _(p):
    off = vmstated(p)
    poke(p, off + 40, "Q", 3 * 1024 * 1024, "snapshot[0] extra vm_state_size")


@image("vmstate-size-huge", "vmstate",
       "snapshot s1 with VM state (see `vmstated`); vm_state_size "
       "0xffffffffffffff00: an offset plus size that overflows, and an "
       "output no disk holds")
def _(p):
    off = vmstated(p)
    poke(p, off + 40, "Q", 0xffffffffffffff00,
         "snapshot[0] extra vm_state_size")


@image("vmstate-disk-size-huge", "vmstate",
       "snapshot s1 with VM state (see `vmstated`); the entry's disk_size "
       "is 0xfffffffffffff000, so the VM state would start far past its "
       "L1 table")
def _(p):
    off = vmstated(p)
    poke(p, off + 48, "Q", 0xfffffffffffff000, "snapshot[0] extra disk_size")


@image("vmstate-data-past-end", "vmstate",
       "snapshot s1 with VM state (see `vmstated`); the L2 entry of its "
       "first VM state cluster points to 0x10000000, past the end of the "
       "file (the guest part of s1 is fine)")
def _(p):
    off = vmstated(p)
    l2 = read(p, snapshot_l1_entry(p, off, 1), "Q") & 0x00fffffffffffe00
    assert l2
    poke(p, l2, "Q", COPIED | PAST_END, "L2 entry of the VM state's first "
         "cluster")


@image("l2-shared-l1", "data",
       "the virtual size is 1 GiB and all 512 L1 entries name the one L2 "
       "table at 0x4000: an L2 table named twice (QEMU never writes one), "
       "which lets a small file describe unbounded mapping work; map refuses "
       "it, check walks the table again quietly (tests/cli/bounds.sh)")
def _(p):
    plain(p)
    poke(p, 24, "Q", 1 << 30, "size")
    poke(p, 36, "I", 512, "l1_size")
    poke_bytes(p, 0x3000, struct.pack(">Q", COPIED | 0x4000) * 512,
               "L1[0..511], each COPIED | 0x4000")


@image("backing-fifo", "chain",
       "backing file name 'backing-fifo.fifo' (raw); bad_images.sh makes it "
       "a FIFO nobody writes to in a copy of the directory: opening it must "
       "not block (in bad/ it does not exist; no pokes)")
def _(p):
    with_backing(p, "backing-fifo.fifo", "raw")


# ------------------------------------------------------------ README

README_HEAD = """\
# Test images

## bad/

Crafted bad qcow2 images for `tests/cli/bad_images.sh`.  They are
regenerated by `make-bad-images.py` (`python3 make-bad-images.py`; needs
qemu-img and qemu-io) and this README is written by the same script, so
the pokes listed here are exactly the ones made.  `python3
make-bad-images.py --check` verifies the committed files are current.

Every image starts from a small valid image made by qemu-img (cluster size
4096, virtual size 1 MiB, a few KiB on disk).  Unless said otherwise the
base is `plain`:

    qemu-img create -f qcow2 -o cluster_size=4096 plain.qcow2 1M
    qemu-io -c 'write -P 0x5a 0 4k' -c 'write -P 0xa5 64k 4k' plain.qcow2

with header at 0x0, refcount table 0x1000, refcount block 0x2000, L1 table
0x3000 (1 entry), L2 table 0x4000, data clusters 0x5000 (guest 0) and
0x6000 (guest 64 KiB); file size 0x7000.  `compressed` bases are `plain`
run through `qemu-img convert -c -O qcow2 -o cluster_size=4096,
compression_type=zlib|zstd`; `snapshot` bases are `plain` plus
`qemu-img snapshot -c s1` (date_sec/date_nsec of the entry poked to
1700000000/0 so the files are reproducible); `vmstated` bases give
snapshot s1 8 KiB of VM state (0x5a) at guest offset 2 MiB, laid out as
savevm does (see make-bad-images.py: QEMU writes it over a grown image,
then the header size, the entry's disk_size and vm_state_size are set and
qemu-img check finds the image clean); `backing` bases are
`qemu-img create -f qcow2 -o cluster_size=4096 -u -b NAME -F FMT X 1M`.

Header offsets: version 4, backing_file_offset 8, backing_file_size 16,
cluster_bits 20, size 24, l1_size 36, l1_table_offset 40, nb_snapshots 60,
snapshots_offset 64, incompatible_features 72, refcount_order 96,
header_length 100; the first header extension starts at 0x70.  Snapshot
entry: l1_table_offset +0, name_size +14, date_sec +16, vm_state_size
(64-bit extra) +40, disk_size (extra) +48.

Kinds (the exit codes `bad_images.sh` expects):

| kind   | qchain-info | info --backing-chain | qchain-map | qchain-export |
|--------|-------------|----------------------|------------|---------------|
| header | 1           | 1                    | 1          | 1             |
| data   | 0           | 0                    | 1          | 1             |
| chain  | 0           | 1                    | 1          | 1             |
| decode | 0           | 0                    | 0          | 1             |
| snap   | 0           | 0                    | 0          | 0; `-s s1`: 1 |
| vmstate | 0          | 0                    | 0          | 0; `--vmstate s1`: 1 |
| snaptable | 0 (a warning) | 0                  | 0          | 0; `-s s1`: 1 |

(`data` damage lies in tables qchain-info never reads; `chain` images with
a protocol or json: backing name also get a warning from qchain-info;
`decode` images map fine, as qemu-img map maps them: only reading the
data finds the damage; `snaptable` images have a snapshot table past the
end of the file, which qemu-img opens too (its check exits 2): the
commands warn, with the offset, and serve the current view without it.)  A failed qchain-export leaves no OUTPUT behind.

Failures must say `qchain-X: 'FILE': message` on stderr, exit exactly 1
and show no sanitizer report.  The backing-loop and self-referencing
images name each other relatively: keep them together in `bad/`.

| image | kind | what is wrong | pokes |
|-------|------|---------------|-------|
"""


# Rows for committed images not made here (fuzzer finds).
FOUND = [
    "| `check-l1-over-header.qcow2` | check | found by fuzz/fuzz_check.c "
    "(not made by make-bad-images.py; committed as found, 11776 bytes, "
    "512-byte clusters): the active L1 table lies over the header, and "
    "entries of it point past the end of the file; `qchain-check -r all` "
    "must drop the references it may drop and leave the header alone | fuzz "
    "artifact, see fuzz/corpus/fuzz_check/crash-l1-over-header |",
]


def make(outdir):
    os.makedirs(outdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="qchain-bad-")
    global CURRENT
    try:
        rows = []
        for name, kind, what, fn in IMAGES:
            CURRENT = []
            path = os.path.join(work, name + ".qcow2")
            fn(path)
            size = os.path.getsize(path)
            assert size < 65536, (name, size)
            shutil.copyfile(path, os.path.join(outdir, name + ".qcow2"))
            pokes = "; ".join(CURRENT) if CURRENT else "none"
            rows.append("| `%s.qcow2` | %s | %s | %s |" % (
                name, kind, what.replace("|", "\\|"),
                pokes.replace("|", "\\|")))
        return README_HEAD + "\n".join(rows + FOUND) + "\n"
    finally:
        shutil.rmtree(work)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        tmp = tempfile.mkdtemp(prefix="qchain-bad-check-")
        try:
            readme = make(os.path.join(tmp, "bad"))
            bad = 0
            for name, _, _, _ in IMAGES:
                a = os.path.join(tmp, "bad", name + ".qcow2")
                b = os.path.join(HERE, "bad", name + ".qcow2")
                if not os.path.exists(b) or open(a, "rb").read() != open(b, "rb").read():
                    print("differs: bad/%s.qcow2" % name)
                    bad = 1
            with open(os.path.join(HERE, "README.md")) as f:
                if f.read() != readme:
                    print("differs: README.md")
                    bad = 1
            return bad
        finally:
            shutil.rmtree(tmp)
    readme = make(os.path.join(HERE, "bad"))
    with open(os.path.join(HERE, "README.md"), "w") as f:
        f.write(readme)
    print("wrote %d images to %s" % (len(IMAGES), os.path.join(HERE, "bad")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
