#!/bin/sh
# make-seeds.sh - regenerate the seed corpora under fuzz/corpus/ from
# qemu-img / qemu-io (7.2 was used), python3 and, if present, zstd.
#
#   fuzz/make-seeds.sh            # rewrites fuzz/corpus/{fuzz_header,
#                                 # fuzz_open_map,fuzz_decompress,
#                                 # fuzz_check}/seed-*
#
# Seeds are small valid inputs; the fuzzers grow the rest.  Files named
# fuzz-<sha1> beside them are inputs libFuzzer found (merged with -merge=1,
# at most 4 KiB each for fuzz_open_map) that reach code the seeds do not;
# this script leaves them alone.  Every image is KiB-sized (cluster_size
# 512 or 4096 where the feature allows); the whole corpus stays under
# ~3 MB.  Snapshot dates differ between runs, so images are not
# byte-identical from one regeneration to the next.
#
# fuzz_open_map inputs are an image, optionally followed by "QCHAINBK" and
# the bytes of the file(s) below it (see fuzz_open_map.c).  fuzz_header
# seeds are the first 4 KiB of those images; fuzz_decompress seeds are one
# selector byte (bit 0: 0 zlib / 1 zstd, bits 1-7: cluster_bits - 9) and a
# compressed cluster.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out_map=$here/corpus/fuzz_open_map
out_hdr=$here/corpus/fuzz_header
out_dec=$here/corpus/fuzz_decompress
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for tool in qemu-img qemu-io python3; do
    command -v $tool >/dev/null || { echo "make-seeds.sh: $tool not found" >&2; exit 1; }
done

mkdir -p "$out_map" "$out_hdr" "$out_dec"
rm -f "$out_map"/seed-* "$out_hdr"/seed-* "$out_dec"/seed-*
cd "$tmp"

create() { qemu-img create -q -f qcow2 "$@"; }
io() { img=$1; shift; for c in "$@"; do qemu-io -f qcow2 -c "$c" "$img" >/dev/null; done; }
# seed NAME FILE... : concatenate the files with the chain separator
seed() {
    name=$1; shift
    first=1
    : > "$out_map/seed-$name"
    for f in "$@"; do
        [ $first = 1 ] || printf 'QCHAINBK' >> "$out_map/seed-$name"
        cat "$f" >> "$out_map/seed-$name"
        first=0
    done
}

# --- single images -------------------------------------------------------
create -o cluster_size=512 empty-512.qcow2 1M
seed empty-512 empty-512.qcow2

create -o cluster_size=512 data-512.qcow2 1M
io data-512.qcow2 'write -P 0x11 0 4k' 'write -P 0x22 64k 1536' \
    'write -P 0x33 700k 512' 'write -z 128k 2k' 'write -P 0x44 1048064 512'
seed data-512 data-512.qcow2

create -o cluster_size=4096 data-4k.qcow2 1M
io data-4k.qcow2 'write -P 0x55 0 12k' 'write -P 0x66 256k 4k' \
    'write -z 64k 8k' 'write -P 0x77 512k 8k' 'discard 512k 4k' \
    'write -P 0x78 1020k 4k'
seed data-4k data-4k.qcow2

create -o cluster_size=4096,compat=0.10 v2-4k.qcow2 1M
io v2-4k.qcow2 'write -P 0x12 0 8k' 'write -P 0x13 300k 4k' 'write -z 8k 4k'
seed v2-4k v2-4k.qcow2

# odd virtual size: the last cluster is partial, the size not a multiple
# of the cluster
create -o cluster_size=4096 odd-size.qcow2 1000000
io odd-size.qcow2 'write -P 0x21 995840 4096'
seed odd-size odd-size.qcow2

for bits in 1 64; do
    create -o cluster_size=4096,refcount_bits=$bits refcount$bits.qcow2 256k
    io refcount$bits.qcow2 'write -P 0x31 0 8k' 'write -P 0x32 128k 4k'
    seed refcount$bits refcount$bits.qcow2
done

create -o cluster_size=4096,lazy_refcounts=on lazy.qcow2 256k
io lazy.qcow2 'write -P 0x41 4k 4k'
seed lazy lazy.qcow2

# compressed clusters: converted whole, and mixed with plain ones
python3 - <<'EOF'
with open("pattern.raw", "wb") as f:
    for i in range(256):
        f.write(bytes([(i * 7 + j // 64) & 0xff for j in range(4096)])
                if i % 3 else bytes(4096))
EOF
qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=4096 pattern.raw zlib.qcow2
seed compressed-zlib zlib.qcow2
qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=4096,compression_type=zstd \
    pattern.raw zstd.qcow2
seed compressed-zstd zstd.qcow2
create -o cluster_size=512 mixed-c.qcow2 256k
io mixed-c.qcow2 'write -c -P 0x51 0 2k' 'write -P 0x52 2k 1k' \
    'write -c -P 0x53 64k 512'
seed compressed-mixed-512 mixed-c.qcow2

# extended L2 (subclusters of 512 bytes at 16 KiB clusters)
create -o cluster_size=16k,extended_l2=on extl2.qcow2 256k
io extl2.qcow2 'write -P 0x61 0 512' 'write -P 0x62 1536 1k' \
    'write -z 4k 1k' 'write -P 0x63 16k 16k' 'write -P 0x64 200k 2560'
seed extl2-16k extl2.qcow2

# internal snapshots
create -o cluster_size=4096 snap.qcow2 512k
io snap.qcow2 'write -P 0x71 0 8k'
qemu-img snapshot -c first snap.qcow2
io snap.qcow2 'write -P 0x72 4k 8k' 'write -z 64k 4k'
qemu-img snapshot -c second snap.qcow2
io snap.qcow2 'write -P 0x73 256k 4k'
seed snapshot-4k snap.qcow2

# a snapshot of a smaller disk (snapshot disk size extra data) and a v2 one
create -o cluster_size=512 snapgrow.qcow2 64k
io snapgrow.qcow2 'write -P 0x74 0 1k'
qemu-img snapshot -c small snapgrow.qcow2
qemu-img resize -q snapgrow.qcow2 128k
io snapgrow.qcow2 'write -P 0x75 96k 1k'
seed snapshot-resized-512 snapgrow.qcow2
create -o cluster_size=512,compat=0.10 snapv2.qcow2 64k
io snapv2.qcow2 'write -P 0x76 0 1k'
qemu-img snapshot -c v2snap snapv2.qcow2
seed snapshot-v2-512 snapv2.qcow2

# persistent bitmaps
create -o cluster_size=4096 bitmap.qcow2 1M
io bitmap.qcow2 'write -P 0x81 0 4k'
qemu-img bitmap --add bitmap.qcow2 bm0
qemu-img bitmap --add --granularity 512 bitmap.qcow2 bm-fine
qemu-img bitmap --add --disable bitmap.qcow2 bm-off
seed bitmap-4k bitmap.qcow2

# metadata preallocation (exercises QEMU's preallocation heuristic)
qemu-img create -q -f qcow2 -o cluster_size=512,preallocation=metadata \
    prealloc.qcow2 64k
io prealloc.qcow2 'write -P 0x91 0 1k'
seed prealloc-512 prealloc.qcow2

# a large sparse virtual size: map windows far from offset 0
create -o cluster_size=4096 big.qcow2 16G
io big.qcow2 'write -P 0xa1 0 4k' 'write -P 0xa2 8G 4k' 'write -P 0xa3 17179865088 4k'
seed big-16g big.qcow2

# something that is not qcow2 at all: opens as raw
head -c 3000 pattern.raw > notqcow2.raw
seed raw-3000 notqcow2.raw

# --- chains ----------------------------------------------------------------
create -o cluster_size=4096 base.qcow2 1M
io base.qcow2 'write -P 0xb1 0 64k' 'write -P 0xb2 512k 8k'
create -o cluster_size=512 -b base.qcow2 -F qcow2 top.qcow2
io top.qcow2 'write -P 0xb3 4k 1k' 'write -z 8k 4k' 'write -P 0xb4 600k 512'
seed chain-qcow2 top.qcow2 base.qcow2

create -o cluster_size=4096 -b top.qcow2 -F qcow2 top2.qcow2
io top2.qcow2 'write -P 0xb5 0 4k'
seed chain-3 top2.qcow2 top.qcow2 base.qcow2

head -c 65536 pattern.raw > base.raw
create -o cluster_size=4096 -b base.raw -F raw top-raw.qcow2 256k
io top-raw.qcow2 'write -P 0xb6 4k 4k'
seed chain-raw top-raw.qcow2 base.raw

# a backing file shorter than the overlay, with no recorded format
create -o cluster_size=512 short.qcow2 16k
io short.qcow2 'write -P 0xb7 0 16k'
create -o cluster_size=512 -b short.qcow2 -F qcow2 noformat.qcow2 64k
qemu-img rebase -q -u -f qcow2 -b short.qcow2 noformat.qcow2 2>/dev/null ||
    qemu-img rebase -q -u -f qcow2 -b short.qcow2 -F qcow2 noformat.qcow2
seed chain-short-noformat noformat.qcow2 short.qcow2

# external data file (served after the separator)
create -o cluster_size=4096,data_file=data.raw datafile.qcow2 64k
io datafile.qcow2 'write -P 0xc1 0 8k' 'write -P 0xc2 32k 4k'
seed datafile datafile.qcow2 data.raw
create -o cluster_size=4096,data_file=data2.raw,data_file_raw=on \
    datafile-raw.qcow2 64k
io datafile-raw.qcow2 'write -P 0xc3 0 4k'
seed datafile-raw datafile-raw.qcow2 data2.raw

# internal snapshots carrying VM state, laid out by QEMU (the forensic
# reads: qcow2_vmstate_*); tests/cli/vmstate_image.py builds and checks it
python3 "$here/../tests/cli/vmstate_image.py" tiny . >/dev/null
seed vmstate-tiny tiny.qcow2

# --- damaged images (salvage mode, issue 18) ---------------------------------
# poke FILE OFFSET VALUE: a big-endian 64-bit value at OFFSET
poke() {
    python3 -c 'import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2], 0)); f.write(struct.pack(">Q", int(sys.argv[3], 0)))' "$@"
}
l1() { python3 -c 'import struct, sys; print(struct.unpack(">Q", open(sys.argv[1], "rb").read(48)[40:48])[0] + 8 * int(sys.argv[2]))' "$1" "$2"; }
# truncated through its data clusters (in the middle of one)
cp data-4k.qcow2 trunc.qcow2
truncate -s $(( $(stat -c %s data-4k.qcow2) - 6000 )) trunc.qcow2
seed damaged-truncated trunc.qcow2
# L2 tables past the end of the file, shifted by a cluster (garbage
# entries), with reserved bits in the L1 entry; one table named twice
# (512-byte clusters: an L2 table maps 32 KiB)
create -o cluster_size=512 l2.qcow2 160k
io l2.qcow2 'write -P 0xd1 0 1k' 'write -P 0xd2 32k 1k' 'write -P 0xd3 64k 1k' \
    'write -P 0xd4 96k 1k' 'write -P 0xd5 128k 1k'
poke l2.qcow2 $(l1 l2.qcow2 1) 0x8000001000000000
python3 -c 'import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); v = struct.unpack(">Q", f.read(8))[0]
    f.seek(int(sys.argv[2])); f.write(struct.pack(">Q", v + 512))' l2.qcow2 $(l1 l2.qcow2 2)
poke l2.qcow2 $(l1 l2.qcow2 3) 0x8100000000000000
python3 -c 'import sys
d = bytearray(open(sys.argv[1], "rb").read()); o = int(sys.argv[2])
d[o + 32:o + 40] = d[o:o + 8]; open(sys.argv[1], "wb").write(d)' l2.qcow2 $(l1 l2.qcow2 0)
seed damaged-l2 l2.qcow2
# compressed clusters whose streams are broken (0xff over their start)
for c in zlib zstd; do
    cp $c.qcow2 broken-$c.qcow2
    python3 -c 'import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
l1 = struct.unpack(">Q", d[40:48])[0]
l2 = struct.unpack(">Q", d[l1:l1 + 8])[0] & 0x00fffffffffffe00
for i in (1, 2, 5):
    e = struct.unpack(">Q", d[l2 + 8 * i:l2 + 8 * i + 8])[0]
    if e >> 62 & 1:
        o = e & ((1 << 58) - 1)
        d[o:o + 4] = b"\xff" * 4
open(sys.argv[1], "wb").write(d)' broken-$c.qcow2
    seed damaged-compressed-$c broken-$c.qcow2
done

# --- fuzz_header: the first 4 KiB of each top image --------------------------
for f in "$out_map"/seed-*; do
    head -c 4096 "$f" > "$out_hdr/$(basename "$f")"
done
# the whole first cluster of a 64 KiB-cluster image
create -o cluster_size=65536 c64k.qcow2 1M
head -c 65536 c64k.qcow2 > "$out_hdr/seed-c64k-first-cluster"

# --- fuzz_decompress: valid compressed clusters --------------------------
python3 - "$out_dec" <<'EOF'
import sys, zlib
out = sys.argv[1]
def cluster(bits):
    n = 1 << bits
    return bytes(((i * 13) >> 6) & 0xff for i in range(n))
for bits in (9, 12, 16):
    # QEMU's qcow2 zlib: raw deflate, window 12 bits
    c = zlib.compressobj(9, zlib.DEFLATED, -12)
    data = c.compress(cluster(bits)) + c.flush()
    sel = ((bits - 9) << 1) | 0
    with open(f"{out}/seed-zlib-{bits}", "wb") as f:
        f.write(bytes([sel]) + data)
# a compressed cluster padded to its sectors, as read from an image
c = zlib.compressobj(9, zlib.DEFLATED, -12)
data = c.compress(bytes(4096)) + c.flush()
with open(f"{out}/seed-zlib-12-zeros-padded", "wb") as f:
    f.write(bytes([(12 - 9) << 1]) + data + bytes(512 - len(data) % 512))
EOF
if command -v zstd >/dev/null; then
    for bits in 9 12 16; do
        python3 -c "import sys; n=1<<$bits; sys.stdout.buffer.write(bytes(((i*13)>>6)&0xff for i in range(n)))" > cl.bin
        sel=$(( ((bits - 9) << 1) | 1 ))
        { printf "\\$(printf '%03o' $sel)"; zstd -q -19 -c cl.bin; } > "$out_dec/seed-zstd-$bits"
    done
else
    echo "make-seeds.sh: zstd not found, no zstd decompress seeds" >&2
fi

# --- fuzz_check: the single-image fuzz_open_map seeds (no chain) up to
# 64 KiB, and a 512-byte-cluster image with a snapshot, clean and damaged
# (16-bit refcounts poked: a referenced cluster at 0, a leak; an L2 entry
# past the end of the file)
out_chk=$here/corpus/fuzz_check
mkdir -p "$out_chk"
rm -f "$out_chk"/seed-*
for f in "$out_map"/seed-*; do
    if ! grep -q QCHAINBK "$f" && [ "$(wc -c < "$f")" -le 65536 ]; then
        cp "$f" "$out_chk/"
    fi
done
create -o cluster_size=512 snap-512.qcow2 1M
io snap-512.qcow2 'write -P 1 0 4k' 'write -c -P 2 64k 512' 'write -P 3 128k 1k'
qemu-img snapshot -c x snap-512.qcow2
io snap-512.qcow2 'write -P 4 0 1k'
cp snap-512.qcow2 "$out_chk/seed-snap-512"
# chk_poke FILE rc CLUSTER EXPR | l2 GUEST_CLUSTER EXPR (v: old value)
chk_poke() {
    python3 - "$@" <<'PYEOF'
import struct, sys
f = open(sys.argv[1], "r+b"); h = f.read(104)
cs = 1 << struct.unpack(">I", h[20:24])[0]
l1, rt = struct.unpack(">Q", h[40:48])[0], struct.unpack(">Q", h[48:56])[0]
op, i, expr = sys.argv[2], int(sys.argv[3], 0), sys.argv[4]
def rw(off, fmt):
    f.seek(off); v = struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
    f.seek(off); f.write(struct.pack(fmt, eval(expr, {"v": v})))
if op == "rc":
    per = cs * 8 // 16
    f.seek(rt + 8 * (i // per)); rb = struct.unpack(">Q", f.read(8))[0]
    rw(rb + 2 * (i % per), ">H")
else:
    f.seek(l1 + 8 * (i // (cs // 8))); l2 = struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00
    rw(l2 + 8 * (i % (cs // 8)), ">Q")
PYEOF
}
cp snap-512.qcow2 t1 && chk_poke t1 rc 3 0 && cp t1 "$out_chk/seed-dmg-rc0-512"
cp snap-512.qcow2 t2 && chk_poke t2 l2 1 '(v & ~0x00fffffffffffe00) | (9000 << 9)' &&
    cp t2 "$out_chk/seed-dmg-past-eof-512"
cp snap-512.qcow2 t3 && chk_poke t3 rc 20 'v + 1' && cp t3 "$out_chk/seed-dmg-leak-512"

du -sh "$here/corpus"
ls -l "$out_map" "$out_hdr" "$out_dec" | awk '$5 > 307200 {print "large seed: " $0}'
