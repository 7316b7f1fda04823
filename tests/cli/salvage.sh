#!/bin/bash
# salvage.sh - qchain-export --salvage (issue 18) against qemu-img convert:
# an image truncated through its data clusters (at a cluster boundary and
# in the middle of one), also as the backing file of an overlay; an L2
# table past the end of the file (of an image, and of an overlay, where we
# differ from qemu-img on purpose) and one misaligned; a compressed cluster
# that does not decompress (zlib and zstd); an undamaged image; the same
# damaged images without --salvage (refused as before); OUTPUT - (a
# pipe); a 2 TiB image whose L1 entries all point past the end (one range,
# at once); and --layer 0 of an overlay copied without its backing file.
#
# Where qemu-img convert recovers (past-EOF data and L2 tables read as
# zeros), our output equals its output; where it fails (misaligned L2
# table, bad compressed data), the ranges we list are zeros and every
# other byte equals the undamaged image's content.  The listed ranges are
# the ones the damage predicts (salvage_check.py), exit 3; an undamaged
# image: exit 0 and an empty "unreadable".
. "$(dirname "$0")/lib.sh"
need_qemu
need_python

CHECK="$CLI_DIR/salvage_check.py"

# salvage IMAGE [ARGS...]: qchain-export --salvage --output=json IMAGE
# out.raw, report in report.json, stderr in salvage.err.
salvage() {
    local img=$1
    shift
    rm -f out.raw
    qc export --salvage --output=json "$@" "$img" out.raw
    cp "$QC_OUT" report.json
    cp "$QC_ERR" salvage.err
}

# expect_salvaged REF [EXPECTED]: exit 3, and salvage_check.py holds.
expect_salvaged() {
    expect_rc 3 || return 1
    if ! $PY "$CHECK" check report.json out.raw "$1" salvage.err ${2:+"$2"} \
            > check.log 2>&1; then
        diag "salvage_check.py: $QC_CMD"
        diag_file check.log
        diag "stderr:"
        diag_file salvage.err 10
        return 1
    fi
}

# expect_refused IMAGE REGEX: without --salvage: exit 1, the message as
# before, no output left behind.
expect_refused() {
    rm -f plain.raw
    qc export "$1" plain.raw
    expect_failure export "$1" || return 1
    expect_stderr_match "$2" || return 1
    [ ! -e plain.raw ] || { diag "plain.raw was left behind"; return 1; }
}

# A 16 MiB image (64 KiB clusters, one L2 table before the data): random
# and patterned data clusters, a hole, zero clusters.
mk_data() {
    rand_file rand.bin 1048576 3 &&
        qimg create -q -f qcow2 "$1" 16M &&
        qio -c "write -s rand.bin 0 1M" -c "write -P 0x22 2M 3M" \
            -c "write -z 6M 1M" -c "write -P 0x33 9M 2M" \
            -c "write -P 0x44 15M 64k" "$1"
}

# truncated CUT: truncated at CUT bytes (all metadata lies before it)
case_truncated() {
    local cut=$1 want
    cd "$(casedir "truncated-$cut")" && mk_data full.qcow2 || return 1
    qimg map --output=json full.qcow2 > full.map || return 1
    cp full.qcow2 cut.qcow2 && truncate -s "$cut" cut.qcow2
    qimg convert -O raw cut.qcow2 ref.raw || return 1
    want=$($PY "$CHECK" past_eof full.map "$cut" \
           "data cluster past the end of the file") || return 1
    salvage cut.qcow2
    expect_salvaged ref.raw "$want" || return 1
    # the human form lists the same ranges, with the same exit code
    rm -f out.raw
    qc export --salvage cut.qcow2 out.raw
    expect_rc 3 || return 1
    [ ! -s "$QC_OUT" ] || { diag "stdout not empty"; return 1; }
    expect_same_text <(grep 'cannot read guest' salvage.err) \
        <(grep 'cannot read guest' "$QC_ERR") "human stderr" || return 1
    expect_same_bytes ref.raw out.raw || return 1
    # to a pipe: the same bytes, ranges and exit code
    timeout -k 5 "$QC_TIMEOUT" "$QCHAIN_BIN/qchain-export" --salvage \
        cut.qcow2 - 2> pipe.err < /dev/null | cat > piped.raw
    expect_eq "exit code of the export to a pipe" 3 "${PIPESTATUS[0]}" ||
        return 1
    expect_same_text <(grep 'cannot read guest' salvage.err) \
        <(grep 'cannot read guest' pipe.err) "piped stderr" || return 1
    expect_same_bytes ref.raw piped.raw || return 1
    expect_refused cut.qcow2 "data cluster at 0x[0-9a-f]+ lies past the end of the file"
}

# The truncated image as the backing file of an overlay: its ranges are
# named by the backing file; the overlay's own data is read.
case_truncated_backing() {
    local want
    cd "$(casedir truncated-backing)" && mk_data base.qcow2 || return 1
    qimg map --output=json base.qcow2 > base.map || return 1
    truncate -s 3M base.qcow2
    qimg create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 16M &&
        qio -c "write -P 0x55 3M 1M" top.qcow2 || return 1
    qimg convert -O raw top.qcow2 ref.raw || return 1
    # expected: base data past 3M, minus what the overlay covers
    want=$($PY -c '
import json, sys
r = json.loads(sys.argv[1])
out = []
for s, l, why in r:
    for a, b in ((s, min(s + l, 3 << 20)), (max(s, 4 << 20), s + l)):
        if a < b:
            out.append([a, b - a, "backing file '"'"'base.qcow2'"'"': " + why])
print(json.dumps(out))' "$($PY "$CHECK" past_eof base.map 3145728 \
        "data cluster past the end of the file")") || return 1
    salvage top.qcow2
    expect_salvaged ref.raw "$want"
}

# A 8 MiB image with 4 KiB clusters: four L2 tables of 2 MiB each.
mk_l2() {
    rand_file rand.bin 1048576 5 &&
        qimg create -q -f qcow2 -o cluster_size=4k "$1" 8M &&
        qio -c "write -P 0x11 0 1M" -c "write -s rand.bin 2560k 1M" \
            -c "write -P 0x33 4M 2M" -c "write -P 0x44 7M 512k" "$1"
}

# l1_entry IMAGE INDEX: file offset of the L1 entry
l1_entry() {
    $PY -c '
import struct, sys
h = open(sys.argv[1], "rb").read(48)
print(struct.unpack(">Q", h[40:48])[0] + 8 * int(sys.argv[2]))' "$1" "$2"
}

# L1 entry 1 (guest 2M..4M) names a table past the end of the file:
# qemu-img reads it as unallocated (zeros) and so do we, listing it.
case_l2_past_eof() {
    cd "$(casedir l2-eof)" && mk_l2 img.qcow2 || return 1
    hpoke img.qcow2 "$(l1_entry img.qcow2 1)" Q '(1 << 63) | (1 << 40)'
    qimg convert -O raw img.qcow2 ref.raw || return 1
    salvage img.qcow2
    expect_salvaged ref.raw \
        '[[2097152, 2097152, "L2 table past the end of the file"]]' ||
        return 1
    expect_refused img.qcow2 "L2 table at 0x10000000000 lies past the end of the file"
}

# The same in an overlay: qemu-img reads the table as unallocated, so the
# backing file's bytes show through where the overlay had its own data;
# we write zeros there and list the range (the overlay did allocate it).
# Everything else equals qemu-img's output.
case_l2_past_eof_overlay() {
    cd "$(casedir l2-eof-overlay)" && mk_l2 base.qcow2 || return 1
    qimg create -q -f qcow2 -o cluster_size=4k -b base.qcow2 -F qcow2 \
        top.qcow2 8M && qio -c "write -P 0x77 2M 1M" top.qcow2 || return 1
    hpoke top.qcow2 "$(l1_entry top.qcow2 1)" Q '(1 << 63) | (1 << 40)'
    qimg convert -O raw top.qcow2 qemu.raw || return 1
    # qemu-img shows the base's 0x11..., not zeros, at guest 2M
    if cmp -s -i 2097152:0 -n 1048576 qemu.raw /dev/zero; then
        diag "qemu-img convert no longer shows the backing file there: update the test"
        return 1
    fi
    salvage top.qcow2
    expect_salvaged qemu.raw \
        '[[2097152, 2097152, "L2 table past the end of the file"]]'
}

# L1 entry 2 (guest 4M..6M) misaligned: qemu-img convert fails; we list
# the range, and the rest equals the undamaged image.
case_l2_misaligned() {
    cd "$(casedir l2-misaligned)" && mk_l2 img.qcow2 || return 1
    qimg convert -O raw img.qcow2 ref.raw || return 1
    hpoke img.qcow2 "$(l1_entry img.qcow2 2)" Q 'v + 512'
    if "$QEMU_IMG" convert -O raw img.qcow2 qemu.raw 2>/dev/null; then
        diag "qemu-img convert recovered a misaligned L2 table: update the test"
        return 1
    fi
    salvage img.qcow2
    expect_salvaged ref.raw \
        '[[4194304, 2097152, "L2 table offset is not cluster aligned"]]' ||
        return 1
    expect_refused img.qcow2 "L2 table offset 0x[0-9a-f]+ is not cluster aligned"
}

# compressed TYPE: cluster 20 of a compressed image gets 0xff bytes over
# the start of its stream (a reserved deflate block type; no zstd magic).
case_compressed() {
    local ct=$1 coff
    cd "$(casedir "compressed-$ct")" || return 1
    rand_file rand.bin 1048576 9
    # compressible but varied: hex of random bytes
    $PY -c 'import sys; d = open("rand.bin","rb").read(); sys.stdout.buffer.write((d.hex() * 2)[:3 << 20].encode())' > hex.bin
    cat rand.bin hex.bin > src.raw
    qimg convert -q -f raw -c -O qcow2 -o compression_type="$ct" src.raw \
        img.qcow2 || return 1
    coff=$($PY -c '
import struct, sys
d = open(sys.argv[1], "rb").read()
cb = struct.unpack(">I", d[20:24])[0]
l1 = struct.unpack(">Q", d[40:48])[0]
l2 = struct.unpack(">Q", d[l1:l1 + 8])[0] & 0x00fffffffffffe00
e = struct.unpack(">Q", d[l2 + 8 * 20:l2 + 8 * 21])[0]
assert e >> 62 & 1, "cluster 20 is not compressed"
print(e & ((1 << (62 - (cb - 8))) - 1))' img.qcow2) || return 1
    $PY -c '
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2]))
    f.write(b"\xff" * 4)' img.qcow2 "$coff"
    if "$QEMU_IMG" convert -O raw img.qcow2 qemu.raw 2>/dev/null; then
        diag "qemu-img convert read the damaged $ct cluster: update the test"
        return 1
    fi
    salvage img.qcow2
    expect_salvaged src.raw "[[1310720, 65536, \"compressed cluster cannot be decompressed ($ct)\"]]" ||
        return 1
    expect_refused img.qcow2 "compressed cluster cannot be decompressed \\($ct\\)"
}

# An undamaged chain (data, zeros, discards, compressed clusters, a
# backing file): exit 0, nothing listed, the same bytes as qemu-img.
case_undamaged() {
    cd "$(casedir undamaged)" || return 1
    mk_q base.qcow2 8M && qimg convert -c -O qcow2 base.qcow2 cbase.qcow2 &&
        qimg create -q -f qcow2 -b cbase.qcow2 -F qcow2 top.qcow2 8M &&
        fill2 qcow2 top.qcow2 8388608 65536 || return 1
    qimg convert -O raw top.qcow2 ref.raw || return 1
    salvage top.qcow2
    expect_rc 0 || return 1
    [ ! -s salvage.err ] || { diag "stderr:"; diag_file salvage.err; return 1; }
    $PY -c 'import json,sys; r = json.load(open(sys.argv[1])); sys.exit(r["unreadable"] != [] or r["unreadable-bytes"] != 0)' report.json ||
        { diag "report:"; diag_file report.json; return 1; }
    expect_same_bytes ref.raw out.raw || return 1
    # without --salvage the report has no "unreadable"
    rm -f out.raw
    qc export --output=json top.qcow2 out.raw
    expect_rc 0 || return 1
    ! grep -q unreadable "$QC_OUT" || { diag "unreadable without --salvage"; return 1; }
}

# 2 TiB whose every L1 entry names an L2 table past the end of the file:
# one range, at once (extents, not clusters), an output with no data.
case_huge() {
    cd "$(casedir huge)" || return 1
    qimg create -q -f qcow2 img.qcow2 2T || return 1
    $PY -c '
import struct, sys
with open(sys.argv[1], "r+b") as f:
    h = f.read(48)
    n, l1 = struct.unpack(">I", h[36:40])[0], struct.unpack(">Q", h[40:48])[0]
    f.seek(l1)
    f.write(b"".join(struct.pack(">Q", (1 << 63) | (1 << 40) + i * 65536) for i in range(n)))' img.qcow2
    QC_TIMEOUT=10 salvage img.qcow2
    expect_rc 3 || return 1
    $PY -c '
import json, sys
r = json.load(open(sys.argv[1]))
sys.exit(r["unreadable"] != [{"start": 0, "length": 2 << 40, "reason": "L2 table past the end of the file"}])' report.json ||
        { diag "report:"; diag_file report.json; return 1; }
    expect_eq "size of out.raw" $((2 << 40)) "$(stat -c %s out.raw)" &&
        expect_eq "blocks of out.raw" 0 "$(stat -c %b out.raw)"
}

# An overlay copied away from its base: --layer 0 needs only the layer
# (qemu-img convert of it opened with "backing": null); the chain view
# still needs the base and says so.
case_orphan_layer() {
    local json
    cd "$(casedir orphan)" && mkdir away || return 1
    mk_q base.qcow2 8M &&
        qimg create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 8M &&
        fill2 qcow2 top.qcow2 8388608 65536 && cp top.qcow2 away/ || return 1
    cd away || return 1
    json='json:{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"top.qcow2"}}'
    qimg convert -O raw "$json" ref.raw || return 1
    qc export --layer 0 top.qcow2 out.raw
    expect_rc 0 || return 1
    [ ! -s "$QC_ERR" ] || { diag "stderr:"; diag_file "$QC_ERR"; return 1; }
    expect_same_bytes ref.raw out.raw || return 1
    salvage top.qcow2 --layer 0
    expect_rc 0 || return 1
    expect_same_bytes ref.raw out.raw || return 1
    rm -f out.raw
    qc export top.qcow2 out.raw
    expect_failure export top.qcow2 || return 1
    expect_stderr_match "backing file 'base.qcow2' of 'top.qcow2' does not exist"
}

tcase "truncated at a cluster boundary" case_truncated 2424832
tcase "truncated inside a data cluster" case_truncated 3000000
tcase "truncated backing file" case_truncated_backing
tcase "L2 table past the end of the file" case_l2_past_eof
tcase "L2 table past the end of an overlay" case_l2_past_eof_overlay
tcase "misaligned L2 table" case_l2_misaligned
tcase "corrupt compressed cluster (zlib)" case_compressed zlib
tcase "corrupt compressed cluster (zstd)" case_compressed zstd
tcase "undamaged chain" case_undamaged
tcase "2 TiB, every L2 table past the end" case_huge
tcase "--layer 0 of an orphan overlay" case_orphan_layer
finish
