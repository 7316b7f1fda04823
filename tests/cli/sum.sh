#!/bin/bash
# sum.sh - qchain-sum against references computed here: the block hash of
# blkhash/blksum (SHA-256 of the SHA-256 of each 64 KiB block, then the
# length as 64-bit little-endian) by python3's hashlib, and sha256sum for
# --plain, both over `qemu-img convert -O raw` of the same view: a chain
# with zero clusters, zlib and zstd compressed clusters, extended L2, a
# size that leaves a short last block, a raw image, an internal snapshot
# (-s), one layer alone (--layer 0, against the overlay opened with
# "backing": null), several images on one command line, the JSON keys,
# errors and locks.
. "$(dirname "$0")/lib.sh"
need_qemu
need_python
HOLDER_LOG=$TESTTMP/holder.log

# blksum RAW: the block hash of a raw file (the reference)
blksum_ref() {
    $PY -c '
import hashlib, sys
outer = hashlib.sha256()
n = 0
with open(sys.argv[1], "rb") as f:
    while True:
        b = f.read(65536)
        if not b:
            break
        outer.update(hashlib.sha256(b).digest())
        n += len(b)
outer.update(n.to_bytes(8, "little"))
print(outer.hexdigest())
' "$1"
}

# check_sum IMAGE RAW [QCHAIN-SUM OPTIONS...]: both checksums of IMAGE
# (with the options) agree with the references over RAW.
check_sum() {
    local img=$1 raw=$2 want got
    shift 2
    want=$(blksum_ref "$raw") || return 1
    qc sum "$@" "$img"
    expect_rc 0 || return 1
    [ -s "$QC_ERR" ] && { diag "unexpected stderr:"; diag_file "$QC_ERR"; return 1; }
    got=$(cat "$QC_OUT")
    expect_eq "block hash of $img $*" "$want  $img" "$got" || return 1
    want=$(sha256sum < "$raw" | cut -d' ' -f1)
    qc sum --plain "$@" "$img"
    expect_rc 0 || return 1
    got=$(cat "$QC_OUT")
    expect_eq "--plain of $img $*" "$want  $img" "$got"
}

# cmp_sum IMAGE [QEMU-IMG/QCHAIN OPTIONS...]: against qemu-img convert.
cmp_sum() {
    local img=$1
    shift
    rm -f ref.raw
    qimg convert "$@" -O raw "$img" ref.raw || return 1
    check_sum "$img" ref.raw "$@"
}

# A base with data, zeros and holes; an overlay (64 KiB clusters) with its
# own data, zero clusters over the base's data, and a discard.
mk_chain() {
    qimg create -q -f qcow2 -o cluster_size=64k base.qcow2 8M || return 1
    qio -f qcow2 -c "write -P 0x11 0 1M" -c "write -P 0x12 2M 512k" \
        -c "write -z 3M 1M" -c "write -P 0x13 5M 100k" \
        -c "write -P 0 6M 128k" base.qcow2 || return 1
    qimg create -q -f qcow2 -o cluster_size=64k -b base.qcow2 -F qcow2 \
        top.qcow2 8M || return 1
    qio -f qcow2 -c "write -P 0x21 64k 64k" -c "write -z 256k 256k" \
        -c "write -z 2M 64k" -c "write -P 0x22 4M 4k" \
        -c "write -P 0x23 7M 1M" top.qcow2
}

case_chain() {
    cd "$(casedir chain)" && mk_chain || return 1
    cmp_sum top.qcow2 || return 1
    cmp_sum base.qcow2
}
tcase "chain with zero clusters" case_chain

case_compressed() {
    cd "$(casedir compressed)" && mk_chain || return 1
    qimg convert -c -O qcow2 top.qcow2 zlib.qcow2 || return 1
    qimg convert -c -O qcow2 -o compression_type=zstd top.qcow2 zstd.qcow2 || return 1
    cmp_sum zlib.qcow2 || return 1
    cmp_sum zstd.qcow2
}
tcase "compressed clusters (zlib, zstd)" case_compressed

case_extl2() {
    cd "$(casedir extl2)" || return 1
    qimg create -q -f qcow2 -o cluster_size=64k,extended_l2=on e.qcow2 4M || return 1
    rand_file rand.bin 20000 || return 1
    qio -f qcow2 -c "write -P 0x31 4k 8k" -c "write -s rand.bin 70k 20000" \
        -c "write -z 1M 64k" -c "write -P 0x32 1028k 2k" \
        -c "write -P 0x33 3M 1M" e.qcow2 || return 1
    cmp_sum e.qcow2
}
tcase "extended L2 (subclusters)" case_extl2

case_short_block() {
    cd "$(casedir short)" || return 1
    # 3 MiB + 1000 bytes: the last block is 1000 bytes, once data, once
    # zeros (its digest is its own, not the zero block's)
    qimg create -q -f qcow2 -o cluster_size=4k s.qcow2 $((3145728 + 1000)) || return 1
    qio -f qcow2 -c "write -P 0x41 0 8k" -c "write -P 0x42 3M 512" s.qcow2 || return 1
    cmp_sum s.qcow2 || return 1
    qimg create -q -f qcow2 z.qcow2 $((3145728 + 1000)) || return 1
    qio -f qcow2 -c "write -P 0x43 1M 4k" z.qcow2 || return 1
    cmp_sum z.qcow2 || return 1
    # smaller than one block; empty
    qimg create -q -f qcow2 tiny.qcow2 4k || return 1
    cmp_sum tiny.qcow2 || return 1
    qimg create -q -f qcow2 empty.qcow2 0 || return 1
    cmp_sum empty.qcow2
}
tcase "size not a multiple of 64 KiB (short last block), tiny, empty" case_short_block

case_chunks() {
    cd "$(casedir chunks)" || return 1
    # more than one 4 MiB read, each 64 KiB block different (the inner
    # digests, hashed by several threads, must come out in order), writes
    # across block boundaries, a long zero range, data again
    local i cmds=()
    for i in $(seq 0 99); do
        cmds+=(-c "write -P $((i % 255 + 1)) $((i * 100))k 100k")
    done
    qimg create -q -f qcow2 -o cluster_size=4k c.qcow2 40M || return 1
    qio -f qcow2 "${cmds[@]}" -c "write -z 12M 20M" -c "write -P 0x71 36M 4M" \
        c.qcow2 || return 1
    cmp_sum c.qcow2 || return 1
    # 512-byte clusters: an L2 table maps 32 KiB, a zero run is many
    # extents; zeros inside data blocks, short zero runs
    qimg create -q -f qcow2 -o cluster_size=512 s.qcow2 9M || return 1
    qio -f qcow2 -c "write -P 0x72 0 1536" -c "write -P 0x73 100k 1k" \
        -c "write -z 130k 900k" -c "write -P 0x74 1100k 512" \
        -c "write -P 0x75 $((9 * 1048576 - 512)) 512" s.qcow2 || return 1
    cmp_sum s.qcow2 || return 1
    # zeros in the middle of blocks of a later read (the buffer held data)
    qimg create -q -f qcow2 -o cluster_size=4k m.qcow2 8M || return 1
    qio -f qcow2 -c "write -P 0x81 0 4M" -c "write -P 0x82 4M 100k" \
        -c "write -P 0x83 4346k 3M" m.qcow2 || return 1
    cmp_sum m.qcow2 || return 1
    # zero runs around the batch size (64 MiB, hashed apart from the data
    # when at least that long): one longer, one a block shorter, one exactly
    # as long ending at a data block, and the tail of zeros past the last data
    qimg create -q -f qcow2 z.qcow2 300M || return 1
    qio -f qcow2 -c "write -P 0x91 0 100k" -c "write -P 0x92 70M 64k" \
        -c "write -P 0x93 138240k 64k" -c "write -P 0x94 203840k 64k" \
        -c "write -z 230M 1M" z.qcow2 || return 1
    cmp_sum z.qcow2
}
tcase "beyond one read: many blocks, long zero ranges" case_chunks

case_raw() {
    cd "$(casedir raw)" || return 1
    rand_file r.img 300000 || return 1
    truncate -s 2M r.img || return 1
    check_sum r.img r.img || return 1
    check_sum r.img r.img -f raw
}
tcase "raw image" case_raw

case_snapshot() {
    cd "$(casedir snapshot)" && mk_chain || return 1
    qimg snapshot -c s1 top.qcow2 || return 1
    qio -f qcow2 -c "write -P 0x51 0 2M" -c "write -z 7M 512k" top.qcow2 || return 1
    qimg snapshot -c s2 top.qcow2 || return 1
    qio -f qcow2 -c "write -P 0x52 1M 64k" top.qcow2 || return 1
    rm -f ref.raw
    qimg convert -l s1 -O raw top.qcow2 ref.raw || return 1
    check_sum top.qcow2 ref.raw -s s1 || return 1
    rm -f ref.raw
    qimg convert -l s2 -O raw top.qcow2 ref.raw || return 1
    check_sum top.qcow2 ref.raw -s 2 || return 1
    cmp_sum top.qcow2 || return 1
    qc sum -s nosuch top.qcow2
    expect_failure sum top.qcow2
}
tcase "internal snapshot (-s)" case_snapshot

case_layer() {
    cd "$(casedir layer)" && mk_chain || return 1
    rm -f ref.raw
    qimg convert -O raw \
        'json:{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"top.qcow2"}}' \
        ref.raw || return 1
    check_sum top.qcow2 ref.raw --layer 0 || return 1
    rm -f ref.raw
    qimg convert -O raw base.qcow2 ref.raw || return 1
    check_sum top.qcow2 ref.raw --layer 1 || return 1
    qc sum --layer 2 top.qcow2
    expect_failure sum top.qcow2 || return 1
    expect_stderr_match "no layer at depth 2"
}
tcase "one layer (--layer N)" case_layer

case_several() {
    cd "$(casedir several)" && mk_chain || return 1
    local a b
    a=$(qimg convert -O raw top.qcow2 t.raw && blksum_ref t.raw) || return 1
    b=$(qimg convert -O raw base.qcow2 b.raw && blksum_ref b.raw) || return 1
    qc sum top.qcow2 base.qcow2
    expect_rc 0 || return 1
    printf '%s  top.qcow2\n%s  base.qcow2\n' "$a" "$b" > want
    expect_same_text want "$QC_OUT" "two images" || return 1
    # a missing image is said, the others still summed, exit 1
    qc sum top.qcow2 missing.qcow2 base.qcow2
    expect_failure sum missing.qcow2 || return 1
    expect_same_text want "$QC_OUT" "with a missing image"
}
tcase "several images on one command line" case_several

case_json() {
    cd "$(casedir json)" && mk_chain || return 1
    local a p
    a=$(qimg convert -O raw top.qcow2 t.raw && blksum_ref t.raw) || return 1
    p=$(sha256sum < t.raw | cut -d' ' -f1)
    qc sum --output=json top.qcow2 base.qcow2
    expect_rc 0 || return 1
    $PY -c '
import json, sys
l = json.load(open(sys.argv[1]))
assert isinstance(l, list) and len(l) == 2, l
o = l[0]
assert list(o) == ["filename", "checksum", "algorithm", "block-size",
                   "virtual-size"], list(o)
assert o["filename"] == "top.qcow2" and o["checksum"] == sys.argv[2], o
assert o["algorithm"] == "sha256" and o["block-size"] == 65536, o
assert o["virtual-size"] == 8 << 20, o
assert l[1]["filename"] == "base.qcow2", l[1]
' "$QC_OUT" "$a" || { diag_file "$QC_OUT"; return 1; }
    qc sum --plain --json top.qcow2
    expect_rc 0 || return 1
    $PY -c '
import json, sys
l = json.load(open(sys.argv[1]))
assert len(l) == 1 and "block-size" not in l[0], l
assert l[0]["checksum"] == sys.argv[2] and l[0]["algorithm"] == "sha256", l
' "$QC_OUT" "$p" || { diag_file "$QC_OUT"; return 1; }
}
tcase "JSON keys" case_json

case_errors() {
    cd "$(casedir errors)" && mk_chain || return 1
    qc sum
    expect_rc 2 || return 1
    qc sum -s s1 --layer 0 top.qcow2
    expect_rc 2 || return 1
    printf 'not an image' > junk.qcow2
    qc sum -f qcow2 junk.qcow2
    expect_failure sum junk.qcow2 || return 1
    # held for writing: refused; -U reads it
    hold top.qcow2 || return 1
    qc sum top.qcow2
    expect_failure sum top.qcow2 || { release; return 1; }
    qc sum -U top.qcow2
    expect_rc 0 || { release; return 1; }
    release
}
tcase "errors and locks" case_errors

finish
