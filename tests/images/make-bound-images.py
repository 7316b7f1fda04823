#!/usr/bin/env python3
"""make-bound-images.py OUTDIR - hostile images for tests/cli/bounds.sh.

Every image is written from scratch with struct.pack (no qemu-img), so the
test makes them at run time into its temporary directory; the output is
deterministic (pseudo-random bytes come from SHAKE-128 of a fixed seed).
Large zero areas are left as holes, so the files are sparse: a "36 MiB"
file takes a few KiB of disk.  The resource budget of a command counts the
files' apparent sizes (what a reader has to get through).

Usage: make-bound-images.py --list          the case names
       make-bound-images.py OUTDIR [CASE...]  make the cases (default all)
OUTDIR gets one directory per case, and a line per case is appended to the
manifest OUTDIR/cases:  NAME TOP WANT_MAP DESCRIPTION
  TOP       the image the commands are given (relative to OUTDIR/NAME)
  WANT_MAP  exit status qchain-map must give ("any": 0 or 1)

Layout of an image made by Img (cluster size cs = 1 << cluster_bits):
  cluster 0       header (v3, 112 bytes, header_length 112), then header
                  extensions from 0x70, then the backing file name
  following       what the case adds (L1 table, L2 tables, data ...)
  at the end      refcount table and refcount blocks (16-bit refcounts)
                  giving every cluster of the file refcount 1, unless the
                  case says otherwise
Header fields poked (qcow2 v3 offsets): backing_file_offset 8,
backing_file_size 16, cluster_bits 20, size 24, l1_size 36,
l1_table_offset 40, refcount_table_offset 48, refcount_table_clusters 56,
nb_snapshots 60, snapshots_offset 64, incompatible_features 72 (bit 3
compression type, bit 4 extended L2), autoclear_features 88 (bit 0
bitmaps), refcount_order 96 (4), header_length 100, compression_type 104.

Most cases put a small valid image, base.qcow2 (64 KiB clusters, 1 MiB,
one data cluster), under the hostile one as its backing file, so
qchain-delta and the chain walk of map/info have something to do.
"""
import hashlib
import os
import struct
import sys
import zlib

COPIED = 1 << 63
COMPRESSED = 1 << 62
MiB = 1 << 20
L1_MAX = (32 * MiB) // 8           # QEMU's L1 cap: 4 Mi entries
REFTABLE_MAX = 8 * MiB             # QEMU's refcount table cap


def noise(n, seed):
    return hashlib.shake_128(seed.encode()).digest(n)


class Img:
    """A qcow2 v3 image built in memory; see the module docstring."""

    def __init__(self, cbits, size, extl2=False, ctype=0):
        self.cbits, self.cs = cbits, 1 << cbits
        self.size = size
        self.extl2 = extl2
        self.ctype = ctype
        self.f = bytearray(self.cs)
        self.exts = []
        self.backing = None
        self.l1 = (0, 0)
        self.snap = (0, 0)
        self.autoclear = 0
        self.rt_override = None
        self.apparent = 0          # file size if larger than the data

    def alloc(self, nbytes):
        """Cluster-aligned room for nbytes; returns its offset."""
        off = len(self.f)
        n = (nbytes + self.cs - 1) // self.cs * self.cs
        self.f += bytes(n)
        return off

    def put(self, off, fmt, *v):
        struct.pack_into(">" + fmt, self.f, off, *v)

    def write(self, path):
        cs = self.cs
        # refcount structures at the end, covering themselves
        per_rb = cs // 2
        n = len(self.f) // cs
        rt_c, rb = 1, 0
        while True:
            total = n + rt_c + rb
            nrb = -(-total // per_rb)
            nrt = max(1, -(-(nrb * 8) // cs))
            if (nrb, nrt) == (rb, rt_c):
                break
            rb, rt_c = nrb, nrt
        rt_off = self.alloc(rt_c * cs)
        rb_off = self.alloc(rb * cs)
        total = len(self.f) // cs
        for i in range(rb):
            self.put(rt_off + 8 * i, "Q", rb_off + i * cs)
        self.f[rb_off:rb_off + 2 * total] = b"\x00\x01" * total
        if self.rt_override:
            rt_off, rt_c = self.rt_override
        # header
        h = self.f
        incompat = (8 if self.ctype else 0) | (16 if self.extl2 else 0)
        struct.pack_into(">4sIQIIQIIQQIIQQQQII", h, 0, b"QFI\xfb", 3, 0, 0,
                         self.cbits, self.size, 0, self.l1[1], self.l1[0],
                         rt_off, rt_c, self.snap[1], self.snap[0], incompat,
                         0, self.autoclear, 4, 112)
        h[104] = self.ctype
        pos = 112
        for t, data in self.exts:
            struct.pack_into(">II", h, pos, t, len(data))
            h[pos + 8:pos + 8 + len(data)] = data
            pos += 8 + (len(data) + 7) // 8 * 8
        pos += 8  # end of extensions
        if self.backing:
            name = self.backing.encode()
            assert pos + len(name) <= cs
            h[pos:pos + len(name)] = name
            struct.pack_into(">QI", h, 8, pos, len(name))
        # sparse write: all-zero 64 KiB chunks stay holes
        with open(path, "wb") as out:
            step = 65536
            zero = bytes(step)
            for o in range(0, len(self.f), step):
                chunk = self.f[o:o + step]
                if chunk != zero[:len(chunk)]:
                    out.seek(o)
                    out.write(chunk)
            out.truncate(max(len(self.f), self.apparent))


def backing_ext(fmt):
    return (0xe2792aca, fmt.encode())


def base(path):
    """base.qcow2: 64 KiB clusters, 1 MiB, guest 0 is a data cluster."""
    im = Img(16, MiB)
    l1 = im.alloc(8)
    l2 = im.alloc(im.cs)
    d = im.alloc(im.cs)
    im.f[d:d + im.cs] = b"\x5a" * im.cs
    im.put(l1, "Q", COPIED | l2)
    im.put(l2, "Q", COPIED | d)
    im.l1 = (l1, 1)
    im.write(path)


def over_base(im):
    im.backing = "base.qcow2"
    im.exts.append(backing_ext("qcow2"))


CASES = []


def case(name, want_map, desc, top="top.qcow2", with_base=True):
    def reg(fn):
        CASES.append((name, top, want_map, desc, fn, with_base))
        return fn
    return reg


# 1. huge virtual sizes and L1 tables ---------------------------------------

@case("vsize-2p62", "1", "size 2^62 (offset 24) with l1_size 4Mi (QEMU's "
      "cap, offset 36) in a 6-cluster file: the L1 is too small for the "
      "size and lies past the end of the file")
def _(d):
    im = Img(16, 1 << 62)
    over_base(im)
    im.l1 = (im.alloc(im.cs), L1_MAX)
    im.write(d + "/top.qcow2")


@case("l1-max-outside", "1", "2 MiB clusters, size 2^61 (the most a 32 MiB "
      "L1 maps), l1_size 4Mi at 0x200000: the 32 MiB table runs past the end "
      "of a 10 MiB file")
def _(d):
    im = Img(21, 1 << 61)
    over_base(im)
    im.l1 = (im.alloc(im.cs), L1_MAX)
    im.write(d + "/top.qcow2")


@case("l1-max-zero", "0", "2 MiB clusters, size 2^61, a real 32 MiB L1 "
      "table (4Mi entries, offset 0x200000) of zeros: a sparse 38 MiB file "
      "describing 2 EiB of unallocated space over base.qcow2")
def _(d):
    im = Img(21, 1 << 61)
    over_base(im)
    im.l1 = (im.alloc(L1_MAX * 8), L1_MAX)
    im.write(d + "/top.qcow2")


@case("l1-max-same-l2", "1", "as l1-max-zero, but all 4Mi L1 entries name "
      "one L2 table whose 256Ki entries all map one data cluster: map must "
      "refuse (an L2 table named twice); check counts the 2^40 references "
      "by walking the table once more with weight 4Mi-1")
def _(d):
    im = Img(21, 1 << 61)
    over_base(im)
    l1 = im.alloc(L1_MAX * 8)
    l2 = im.alloc(im.cs)
    data = im.alloc(im.cs)
    im.f[l1:l1 + L1_MAX * 8] = struct.pack(">Q", l2) * L1_MAX
    im.f[l2:l2 + im.cs] = struct.pack(">Q", data) * (im.cs // 8)
    im.l1 = (l1, L1_MAX)
    im.write(d + "/top.qcow2")


@case("l1-max-garbage", "1", "as l1-max-zero, but the 32 MiB L1 table is "
      "SHAKE-128 noise (reserved bits, offsets anywhere)")
def _(d):
    im = Img(21, 1 << 61)
    over_base(im)
    l1 = im.alloc(L1_MAX * 8)
    im.f[l1:l1 + L1_MAX * 8] = noise(L1_MAX * 8, "l1-max-garbage")
    im.l1 = (l1, L1_MAX)
    im.write(d + "/top.qcow2")


# 2. refcount table claims ---------------------------------------------------

@case("reftable-max-tiny", "1", "512-byte clusters, refcount_table_clusters "
      "16384 (8 MiB, QEMU's cap, offset 56) in a 3.5 KiB file")
def _(d):
    im = Img(9, MiB)
    over_base(im)
    im.l1 = (im.alloc(8 * 32), 32)
    im.write(d + "/top.qcow2")
    with open(d + "/top.qcow2", "r+b") as f:
        f.seek(56)
        f.write(struct.pack(">I", REFTABLE_MAX // 512))


@case("reftable-max-shared", "0", "512-byte clusters, a real 8 MiB refcount "
      "table (16384 clusters) whose 1Mi entries all name one refcount block")
def _(d):
    im = Img(9, MiB)
    over_base(im)
    im.l1 = (im.alloc(8 * 32), 32)
    rb = im.alloc(512)
    im.f[rb:rb + 512] = b"\xff" * 512
    rt = im.alloc(REFTABLE_MAX)
    im.f[rt:rt + REFTABLE_MAX] = struct.pack(">Q", rb) * (REFTABLE_MAX // 8)
    im.rt_override = (rt, REFTABLE_MAX // 512)
    im.write(d + "/top.qcow2")


# 3. snapshot tables ---------------------------------------------------------

def snapshots(im, n, l1_off, l1_size, extra=16, seed=None):
    """n snapshot entries (id 'I', name 'sI') after the image's data."""
    ents = []
    for i in range(n):
        sid, name = str(i + 1).encode(), b"s%d" % (i + 1)
        e = struct.pack(">QIHHIIQII", l1_off, l1_size, len(sid), len(name),
                        1700000000, 0, 0, 0, extra)
        x = bytearray(extra)
        if extra >= 16:
            struct.pack_into(">QQ", x, 0, 0, im.size)
        e += bytes(x) + sid + name
        e += bytes(-len(e) % 8)
        ents.append(e)
    table = b"".join(ents)
    off = im.alloc(len(table))
    im.f[off:off + len(table)] = table
    im.snap = (off, n)


def shared_l2s(im, n_l2, data):
    """An L1 table naming n_l2 distinct L2 tables; every entry of every
    table maps cluster `data` (0: the tables are empty)."""
    l1 = im.alloc(n_l2 * 8)
    for i in range(n_l2):
        l2 = im.alloc(im.cs)
        im.put(l1 + 8 * i, "Q", l2)
        if data:
            im.f[l2:l2 + im.cs] = struct.pack(">Q", data) * (im.cs // 8)
    return l1


@case("snap-65536-empty-l2", "0", "64 KiB clusters, 65536 snapshots "
      "(QEMU's cap, nb_snapshots at 60) all naming the active L1 table: 16 "
      "L2 tables of zeros walked once per snapshot")
def _(d):
    im = Img(16, 16 * 512 * MiB)
    over_base(im)
    l1 = shared_l2s(im, 16, 0)
    im.l1 = (l1, 16)
    snapshots(im, 65536, l1, 16)
    im.write(d + "/top.qcow2")


@case("snap-65536-shared-l2", "0", "as snap-65536-empty-l2, but every L2 "
      "entry maps one data cluster: 8.6 Gi references to one cluster")
def _(d):
    im = Img(16, 16 * 512 * MiB)
    over_base(im)
    data = im.alloc(im.cs)
    l1 = shared_l2s(im, 16, data)
    im.l1 = (l1, 16)
    snapshots(im, 65536, l1, 16)
    im.write(d + "/top.qcow2")


@case("snap-65536-l1-overlap", "0", "512-byte clusters, 65536 snapshots "
      "whose L1 tables all claim 4Mi entries (32 MiB) at 65536 different "
      "offsets 512 bytes apart: one sparse 64 MiB range described 65536 "
      "times over, 2^38 L1 entries; check must stop at its budget")
def _(d):
    im = Img(9, MiB)
    over_base(im)
    im.l1 = (im.alloc(8 * 32), 32)
    l1s = im.alloc(65536 * im.cs + L1_MAX * 8)
    ents = []
    for i in range(65536):
        sid, name = str(i + 1).encode(), b"s%d" % (i + 1)
        e = struct.pack(">QIHHIIQII", l1s + i * im.cs, L1_MAX, len(sid),
                        len(name), 1700000000, 0, 0, 0, 16)
        e += struct.pack(">QQ", 0, im.size) + sid + name
        ents.append(e + bytes(-len(e) % 8))
    table = b"".join(ents)
    off = im.alloc(len(table))
    im.f[off:off + len(table)] = table
    im.snap = (off, 65536)
    im.write(d + "/top.qcow2")


@case("snap-65536-extra", "0", "65536 snapshots with 960 bytes of extra "
      "data each (QEMU's cap is 1024): a 63.5 MiB snapshot table, just under "
      "QEMU's 64 MiB cap")
def _(d):
    im = Img(16, MiB)
    over_base(im)
    im.l1 = (im.alloc(8), 1)
    snapshots(im, 65536, 0, 0, extra=960)
    im.write(d + "/top.qcow2")


@case("snap-l1-huge", "0", "4 snapshots whose L1 tables claim 4Mi entries: "
      "at 0 over the header (inside a sparse 33 MiB file), past the end, "
      "unaligned, and at offset 2^63")
def _(d):
    im = Img(16, MiB)
    over_base(im)
    im.apparent = 33 * MiB
    im.l1 = (im.alloc(8), 1)
    ents = b""
    for i, off in enumerate((0, 1 << 40, 0x10200, 1 << 63)):
        sid, name = str(i + 1).encode(), b"s%d" % (i + 1)
        e = struct.pack(">QIHHIIQII", off, L1_MAX, len(sid), len(name),
                        1700000000, 0, 0, 0, 16)
        e += struct.pack(">QQ", 0, im.size) + sid + name
        ents += e + bytes(-len(e) % 8)
    so = im.alloc(len(ents))
    im.f[so:so + len(ents)] = ents
    im.snap = (so, 4)
    im.write(d + "/top.qcow2")


# 4. bitmaps -----------------------------------------------------------------

def bitmaps(im, entries):
    """A bitmap directory of (table_offset, table_size) entries, names
    'b' + index, granularity 16, and its header extension."""
    ents = []
    for i, (toff, tsize) in enumerate(entries):
        name = b"b%d" % i
        e = struct.pack(">QIIBBHI", toff, tsize, 0, 1, 16, len(name), 0)
        e += name
        ents.append(e + bytes(-len(e) % 8))
    dirb = b"".join(ents)
    doff = im.alloc(len(dirb))
    im.f[doff:doff + len(dirb)] = dirb
    im.exts.append((0x23852875, struct.pack(">IIQQ", len(entries), 0,
                                            len(dirb), doff)))
    im.autoclear |= 1


@case("bitmaps-65535-shared", "0", "64 KiB clusters, 65535 bitmaps (QEMU's "
      "cap) in a 2 MiB directory, all naming one 1 MiB bitmap table whose "
      "128Ki entries map one data cluster")
def _(d):
    im = Img(16, 64 * 1024 * MiB)
    over_base(im)
    im.l1 = (im.alloc(8 * 128), 128)
    data = im.alloc(im.cs)
    tsize = 128 * 1024
    table = im.alloc(tsize * 8)
    im.f[table:table + tsize * 8] = struct.pack(">Q", data) * tsize
    bitmaps(im, [(table, tsize)] * 65535)
    im.write(d + "/top.qcow2")


@case("bitmap-table-huge", "0", "one bitmap whose table claims 2^32-1 "
      "entries (32 GiB) and one whose table lies past the end of the file")
def _(d):
    im = Img(16, MiB)
    over_base(im)
    im.l1 = (im.alloc(8), 1)
    t = im.alloc(im.cs)
    bitmaps(im, [(t, 0xffffffff), (1 << 40, 1)])
    im.write(d + "/top.qcow2")


# 5. compressed clusters -----------------------------------------------------

def zstd_rle_frame(out_len, claim):
    """A zstd frame (single segment, 8-byte content size `claim`) of RLE
    blocks of 128 KiB zeros producing out_len bytes."""
    fr = b"\x28\xb5\x2f\xfd" + bytes([0xe0]) + struct.pack("<Q", claim)
    left = out_len
    while left:
        n = min(left, 128 * 1024)
        left -= n
        hdr = (n << 3) | (1 << 1) | (1 if left == 0 else 0)
        fr += struct.pack("<I", hdr)[:3] + b"\x00"
    return fr


def deflate(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -12)
    return c.compress(data) + c.flush()


def bomb(path, stream, ctype, vsize, nsec_max=False):
    """2 MiB clusters; every entry of one L2 table is a compressed
    descriptor of the same stream (offset bits 0-48, sector count bits
    49-61)."""
    im = Img(21, vsize, ctype=ctype)
    over_base(im)
    l1 = im.alloc(8)
    l2 = im.alloc(im.cs)
    s = im.alloc(max(len(stream), 4 * MiB + 512 if nsec_max else 0))
    im.f[s:s + len(stream)] = stream
    nsec = 0x1fff if nsec_max else (len(stream) + 511) // 512 - 1
    desc = COMPRESSED | (nsec << 49) | s
    n = min(im.cs // 8, vsize // im.cs)
    im.f[l2:l2 + 8 * n] = struct.pack(">Q", desc) * n
    im.put(l1, "Q", l2)
    im.l1 = (l1, 1)
    im.write(path)


@case("bomb-zlib-l2", "0", "2 MiB clusters, 512 GiB: all 256Ki entries of "
      "the L2 table are one compressed descriptor of a 2 KiB deflate stream "
      "of a whole cluster of zeros")
def _(d):
    bomb(d + "/top.qcow2", deflate(bytes(2 * MiB)), 0, 512 << 30)


@case("bomb-csize-max", "0", "as bomb-zlib-l2, but the sector count field "
      "is at its maximum (8192 sectors: 4 MiB of compressed data, inside "
      "the file)")
def _(d):
    bomb(d + "/top.qcow2", deflate(bytes(2 * MiB)), 0, 512 << 30, True)


@case("bomb-zlib-over", "0", "64 MiB of 2 MiB clusters, each one compressed "
      "descriptor of a deflate stream of 64 MiB of zeros (32 clusters' "
      "worth): decompression must stop at the cluster")
def _(d):
    bomb(d + "/top.qcow2", deflate(bytes(64 * MiB)), 0, 64 * MiB)


@case("bomb-zstd-over", "0", "64 MiB of 2 MiB clusters, zstd (incompatible "
      "bit 3, compression_type 1), each one descriptor of a frame that "
      "claims 2^40 bytes and carries 64 MiB of RLE zeros")
def _(d):
    bomb(d + "/top.qcow2", zstd_rle_frame(64 * MiB, 1 << 40), 1, 64 * MiB)


# 6. shared and numerous L2 tables -------------------------------------------

@case("l2-shared-active", "1", "64 KiB clusters: 4096 L1 entries all name "
      "one L2 table whose 8192 entries map one data cluster")
def _(d):
    im = Img(16, 4096 * 512 * MiB)
    over_base(im)
    l1 = im.alloc(4096 * 8)
    l2 = im.alloc(im.cs)
    data = im.alloc(im.cs)
    im.f[l1:l1 + 4096 * 8] = struct.pack(">Q", l2) * 4096
    im.f[l2:l2 + im.cs] = struct.pack(">Q", data) * (im.cs // 8)
    im.l1 = (l1, 4096)
    im.write(d + "/top.qcow2")


@case("l2-many-one-data", "0", "64 KiB clusters: 64 distinct L2 tables, all "
      "512Ki entries map one data cluster (refcount overflow)")
def _(d):
    im = Img(16, 64 * 512 * MiB)
    over_base(im)
    data = im.alloc(im.cs)
    im.l1 = (shared_l2s(im, 64, data), 64)
    im.write(d + "/top.qcow2")


# 8. extended L2, alternating subclusters ------------------------------------

def ext_alternating(path, cbits, n_l2):
    im = Img(cbits, n_l2 << (cbits + cbits - 4), extl2=True)
    over_base(im)
    l1 = im.alloc(8 * n_l2)
    data = im.alloc(im.cs)
    ent = struct.pack(">QQ", COPIED | data, 0xaaaaaaaa55555555)
    for i in range(n_l2):
        l2 = im.alloc(im.cs)
        im.f[l2:l2 + im.cs] = ent * (im.cs // 16)
        im.put(l1 + 8 * i, "Q", l2)
    im.l1 = (l1, n_l2)
    im.write(path)


@case("extl2-alt-2m", "0", "2 MiB clusters, extended L2 (incompatible bit "
      "4): every entry of one L2 table maps one data cluster with subclusters "
      "alternating data / zero (bitmap 0xaaaaaaaa55555555): 4Mi extents")
def _(d):
    ext_alternating(d + "/top.qcow2", 21, 1)


@case("extl2-alt-16k", "0", "16 KiB clusters, extended L2: 64 L2 tables, "
      "every entry alternating data / zero subclusters of 512 bytes: 2Mi "
      "extents from a 1.1 MiB file")
def _(d):
    ext_alternating(d + "/top.qcow2", 14, 64)


# 7. chains ------------------------------------------------------------------

def layer(path, backing, fmt="qcow2", cbits=9):
    im = Img(cbits, MiB)
    if backing is not None:
        im.backing = backing
        im.exts.append(backing_ext(fmt))
    im.l1 = (im.alloc(8 * 32), 32)
    im.write(path)


@case("chain-300", "1", "300 layers of 512-byte-cluster images, each the "
      "backing file of the next (the depth cap is 256)", top="l299.qcow2",
      with_base=False)
def _(d):
    for i in range(300):
        layer("%s/l%d.qcow2" % (d, i), "l%d.qcow2" % (i - 1) if i else None)


@case("chain-256", "0", "256 layers: the deepest chain accepted",
      top="l255.qcow2", with_base=False)
def _(d):
    for i in range(256):
        layer("%s/l%d.qcow2" % (d, i), "l%d.qcow2" % (i - 1) if i else None)


@case("loop-ab", "1", "a.qcow2 -> b.qcow2 -> a.qcow2", top="a.qcow2",
      with_base=False)
def _(d):
    layer(d + "/a.qcow2", "b.qcow2")
    layer(d + "/b.qcow2", "a.qcow2")


@case("loop-self", "1", "a.qcow2 names itself", top="a.qcow2",
      with_base=False)
def _(d):
    layer(d + "/a.qcow2", "a.qcow2")


@case("loop-symlink", "1", "a.qcow2 -> link.qcow2, a symlink to a.qcow2",
      top="a.qcow2", with_base=False)
def _(d):
    layer(d + "/a.qcow2", "link.qcow2")
    os.symlink("a.qcow2", d + "/link.qcow2")


@case("loop-long-names", "1", "a 200-layer loop whose backing names are "
      "1023 bytes each ('./' repeated, then the name)", top="n0.qcow2",
      with_base=False)
def _(d):
    for i in range(200):
        name = "n%d.qcow2" % ((i + 1) % 200)
        pad = 1023 - len(name)
        layer("%s/n%d.qcow2" % (d, i), "./" * (pad // 2) + "/" * (pad % 2) +
              name, cbits=12)


@case("backing-fifo", "1", "the backing file is a FIFO nobody writes to "
      "(opening it must not block)", with_base=False)
def _(d):
    layer(d + "/top.qcow2", "fifo", fmt="raw")
    os.mkfifo(d + "/fifo")


@case("backing-dev", "any", "the backing file is /dev/zero (a character "
      "device, raw)", with_base=False)
def _(d):
    layer(d + "/top.qcow2", "/dev/zero", fmt="raw")


def main():
    args = sys.argv[1:]
    if args == ["--list"]:
        print("\n".join(c[0] for c in CASES))
        return
    if args in (["-h"], ["--help"]):
        print(__doc__)
        return
    if not args or args[0].startswith("-"):
        sys.exit("usage: make-bound-images.py --list | OUTDIR [CASE...]")
    out, only = args[0], set(args[1:])
    unknown = only - {c[0] for c in CASES}
    if unknown:
        sys.exit("unknown case(s): " + " ".join(sorted(unknown)))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cases"), "a") as manifest:
        for name, top, want, desc, fn, with_base in CASES:
            if only and name not in only:
                continue
            d = os.path.join(out, name)
            os.makedirs(d)
            if with_base:
                base(os.path.join(d, "base.qcow2"))
            fn(d)
            manifest.write("%s %s %s %s\n" % (name, top, want, desc))


if __name__ == "__main__":
    main()
