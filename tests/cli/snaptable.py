#!/usr/bin/env python3
"""snaptable.py MODE IMAGE: break the snapshot table of a 64 KiB-cluster
qcow2 image (16-bit refcounts, one refcount block) the ways QEMU's check
tolerates and repairs (iotest 261 territory):

  incomplete   rewrite the table in place, entry 0 with 8 bytes of extra
               data (the 64-bit VM state size only), entry 1 with none
               (version 3 wants at least 16)
  too-many N   a new table at the end of the file: the image's snapshots,
               then empty ones up to N entries (N > 65536: QEMU keeps the
               first 65536); the old table's clusters freed, the new
               table's counted
  too-big      a new table at the end of the file: the image's snapshots,
               then entries of 1 KiB of extra data and 64 KiB id and name
               until the table is just over QEMU's 64 MiB (the last entry
               overhangs); written sparsely

The snapshots already in the image come first, so they survive a repair."""
import struct
import sys

FIXED = 40


def be(fmt, b, off):
    return struct.unpack_from(">" + fmt, b, off)[0]


def read_table(f, off, n):
    """The entries as dicts, each with its raw fixed part and the rest."""
    out = []
    pos = off
    for _ in range(n):
        pos = (pos + 7) & ~7
        f.seek(pos)
        fx = f.read(FIXED)
        idl, nml, extra = be("H", fx, 12), be("H", fx, 14), be("I", fx, 36)
        rest = f.read(extra + idl + nml)
        out.append({"fixed": bytearray(fx), "extra": rest[:extra],
                    "id": rest[extra:extra + idl],
                    "name": rest[extra + idl:]})
        pos += FIXED + extra + idl + nml
    return out, pos - off


def encode(e):
    fx = bytearray(e["fixed"])
    struct.pack_into(">HHxxxxxxxxxxxxxxxxxxxxI", fx, 12, len(e["id"]),
                     len(e["name"]), len(e["extra"]))
    b = bytes(fx) + e["extra"] + e["id"] + e["name"]
    return b + b"\0" * (-len(b) % 8)


class Image:
    def __init__(self, path):
        self.f = open(path, "r+b")
        h = self.f.read(104)
        self.cs = 1 << be("I", h, 20)
        assert self.cs == 65536 and be("I", h, 96) == 4, "64k, 16-bit only"
        self.size = be("Q", h, 24)
        self.rt = be("Q", h, 48)
        self.nsnap = be("I", h, 60)
        self.snapoff = be("Q", h, 64)
        self.f.seek(self.rt)
        self.rb = be("Q", self.f.read(8), 0) & 0x00fffffffffffe00

    def set_rc(self, first, last, v):
        """refcount of host clusters [first, last] (one refcount block)"""
        assert last < self.cs // 2
        self.f.seek(self.rb + 2 * first)
        self.f.write(struct.pack(">H", v) * (last - first + 1))

    def end(self):
        self.f.seek(0, 2)
        return (self.f.tell() + self.cs - 1) // self.cs * self.cs

    def switch(self, entries_at, count, length):
        """point the header at a new table of length bytes, count entries"""
        old, oldlen = self.snapoff, read_table(self.f, self.snapoff,
                                               self.nsnap)[1]
        if self.nsnap:
            self.set_rc(old // self.cs, (old + oldlen - 1) // self.cs, 0)
        self.set_rc(entries_at // self.cs,
                    (entries_at + length - 1) // self.cs, 1)
        self.f.seek(60)
        self.f.write(struct.pack(">IQ", count, entries_at))


def main():
    mode, path = sys.argv[1], sys.argv[2]
    img = Image(path)
    ents, _ = read_table(img.f, img.snapoff, img.nsnap)
    if mode == "incomplete":
        assert len(ents) >= 2
        ents[0]["extra"] = ents[0]["extra"][:8]
        ents[1]["extra"] = b""
        img.f.seek(img.snapoff)
        img.f.write(b"".join(encode(e) for e in ents))
    elif mode == "too-many":
        n = int(sys.argv[3])
        start = img.end()
        blob = b"".join(encode(e) for e in ents)
        filler = bytearray(FIXED)
        empty = encode({"fixed": filler,
                        "extra": struct.pack(">QQ", 0, img.size),
                        "id": b"", "name": b""})
        blob += empty * (n - len(ents))
        img.f.seek(start)
        img.f.write(blob)
        img.f.truncate(start + len(blob))
        img.switch(start, n, len(blob))
    elif mode == "too-big":
        start = img.end()
        blob = b"".join(encode(e) for e in ents)
        img.f.seek(start)
        img.f.write(blob)
        pos, n = len(blob), len(ents)
        limit = 64 << 20
        big = bytearray(FIXED)
        struct.pack_into(">HHxxxxxxxxxxxxxxxxxxxxI", big, 12, 65535, 65535,
                         1024)
        elen = FIXED + 1024 + 2 * 65535
        while pos <= limit:
            pos = (pos + 7) & ~7
            img.f.seek(start + pos)
            img.f.write(bytes(big) + struct.pack(">QQ", 0, img.size))
            pos += elen
            n += 1
        img.f.truncate(start + pos)
        img.switch(start, n, pos)
    else:
        sys.exit("unknown mode " + mode)
    img.f.close()


main()
