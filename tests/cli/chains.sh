#!/bin/bash
# chains.sh - backing chains against qemu-img: depth 1 to 4 (and 16),
# raw and qcow2 layers with different cluster sizes, overlays larger and
# smaller than their backing files (also with sizes that are not cluster
# multiples), backing formats probed rather than recorded, entry in the
# middle of a chain, a backing file with an external data file; and what
# happens when a backing file is missing: qchain-map and qchain-export fail
# naming the image that wants it, qchain-info warns and shows the image,
# qchain-info --backing-chain fails.
. "$(dirname "$0")/lib.sh"
need_qemu
need_python

# all_three IMAGE: export, map and info --backing-chain agree with qemu-img
all_three() {
    cmp_export "$1" || return 1
    cmp_map "$1" || return 1
    cmp_info "$1" --backing-chain
}

# ---------------------------------------------------------------- depths

# chain N: build a chain of N layers in the current directory; prints the
# top's name.  Layer specs: "raw SIZE" or "qcow2 SIZE OPTIONS".
build_chain() {
    local i=0 prev="" prevfmt="" spec fmt size opts name u
    for spec in "$@"; do
        set -- $spec
        fmt=$1 size=$2 opts=${3:-}
        if [ "$fmt" = raw ]; then
            name=l$i.img
            qimg create -q -f raw "$name" "$size" || return 1
        else
            name=l$i.qcow2
            qimg create -q -f qcow2 ${opts:+-o "$opts"} \
                ${prev:+-b "$prev" -F "$prevfmt"} "$name" "$size" || return 1
        fi
        u=$(unit_for "$(qsize "$size")" 65536)
        if [ $i -eq 0 ]; then
            fill "$fmt" "$name" "$(qsize "$size")" "$u" || return 1
        else
            fill2 "$fmt" "$name" "$(qsize "$size")" "$u" || return 1
        fi
        prev=$name prevfmt=$fmt i=$((i + 1))
    done
    echo "$prev"
}

case_depth() {
    cd "$(casedir "depth$1")" || return 1
    shift
    local top
    top=$(build_chain "$@") || return 1
    all_three "$top"
}
tcase "depth 1: qcow2 4k" case_depth 1 "qcow2 4M cluster_size=4k"
tcase "depth 2: raw <- qcow2 512" case_depth 2 "raw 2M" "qcow2 2M cluster_size=512"
tcase "depth 3: raw <- v2 64k <- extended L2 16k, growing" case_depth 3 \
    "raw 1M" "qcow2 2M compat=0.10,cluster_size=64k" "qcow2 4M cluster_size=16k,extended_l2=on"
tcase "depth 4: 512 <- 4k <- zstd 64k <- 2M, growing" case_depth 4 \
    "qcow2 2M cluster_size=512" "qcow2 3M cluster_size=4k" \
    "qcow2 4M cluster_size=64k,compression_type=zstd" "qcow2 8M cluster_size=2M"
tcase "depth 4: shrinking overlays" case_depth 4s \
    "qcow2 4M cluster_size=64k" "qcow2 3M cluster_size=4k" "qcow2 2M cluster_size=512" \
    "qcow2 3M cluster_size=64k,refcount_bits=1"

# a chain of 16 layers, each writing its own 4 KiB and zeroing another's
case_depth16() {
    cd "$(casedir depth16)" || return 1
    local i prev=""
    for i in $(seq 0 15); do
        qimg create -q -f qcow2 -o cluster_size=4k ${prev:+-b "$prev" -F qcow2} "l$i.qcow2" 1M || return 1
        qio -f qcow2 -c "write -P $((i + 1)) $((i * 65536)) 4k" \
            -c "write -z $(((i + 7) % 16 * 65536)) 2k" "l$i.qcow2" || return 1
        prev=l$i.qcow2
    done
    all_three l15.qcow2
}
tcase "depth 16: one write per layer" case_depth16

# entering the chain in the middle: each layer of a depth-4 chain
case_each_layer() {
    cd "$(casedir layers)" || return 1
    build_chain "raw 2M" "qcow2 3M cluster_size=512" "qcow2 4M cluster_size=4k,extended_l2=off" \
        "qcow2 4M cluster_size=64k" > /dev/null || return 1
    local l
    for l in l0.img l1.qcow2 l2.qcow2 l3.qcow2; do
        all_three "$l" || { diag "(layer $l)"; return 1; }
    done
}
tcase "every layer of a depth-4 chain as the top" case_each_layer

# ------------------------------------------------------------ sizes

# backing sizes that are not cluster multiples, overlay reading past them
case_odd_backing_size() {
    cd "$(casedir oddsize)" || return 1
    qimg create -q -f raw base.img $((1048576 + 512)) &&
        qio -f raw -c "write -P 0x61 0 $((1048576 + 512))" base.img &&
        qimg create -q -f qcow2 -o cluster_size=64k -b base.img -F raw top.qcow2 2M &&
        qio -f qcow2 -c "write -P 0x62 $((2 * 65536)) 4k" top.qcow2 || return 1
    all_three top.qcow2
}
tcase "raw backing of 1 MiB + 512 under a 2 MiB overlay (64k clusters)" case_odd_backing_size

case_odd_qcow2_backing() {
    cd "$(casedir oddq)" || return 1
    qimg create -q -f qcow2 -o cluster_size=64k base.qcow2 $((1048576 + 3 * 512)) &&
        qio -f qcow2 -c "write -P 0x71 $((1048576 - 65536)) $((65536 + 3 * 512))" base.qcow2 &&
        qimg create -q -f qcow2 -o cluster_size=512 -b base.qcow2 -F qcow2 mid.qcow2 $((1048576 + 5 * 512)) &&
        qio -f qcow2 -c "write -P 0x72 $((1048576 + 4 * 512)) 512" mid.qcow2 &&
        qimg create -q -f qcow2 -o cluster_size=2M -b mid.qcow2 -F qcow2 top.qcow2 4M &&
        qio -f qcow2 -c "write -P 0x73 0 4k" top.qcow2 || return 1
    all_three top.qcow2
}
tcase "qcow2 backing sizes 1M+1.5k and 1M+2.5k under a 2M-cluster overlay" case_odd_qcow2_backing

# an overlay entirely of zero clusters hides all backing data
case_zero_overlay() {
    cd "$(casedir zerotop)" || return 1
    qimg create -q -f qcow2 base.qcow2 4M && fill qcow2 base.qcow2 4194304 65536 &&
        qimg create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 4M &&
        qio -f qcow2 -c "write -z 0 4M" top.qcow2 || return 1
    all_three top.qcow2
}
tcase "overlay of zero clusters over data" case_zero_overlay

# --------------------------------------------------------- probed formats

# drop_backing_format IMAGE: turn the backing format header extension
# (0xe2792aca) into an unknown, ignored one (0x0badf00d), so readers must
# probe the backing file's format.
drop_backing_format() {
    $PY - "$1" <<'EOF'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    h = f.read(65536)
    off = struct.unpack(">I", h[100:104])[0] if struct.unpack(">I", h[4:8])[0] >= 3 else 72
    while off + 8 <= len(h):
        t, l = struct.unpack(">II", h[off:off + 8])
        if t == 0:
            sys.exit("no backing format extension")
        if t == 0xE2792ACA:
            f.seek(off)
            f.write(struct.pack(">I", 0x0BADF00D))
            sys.exit(0)
        off += 8 + ((l + 7) & ~7)
    sys.exit("no backing format extension")
EOF
}

case_probed() {
    cd "$(casedir "probed-$1")" || return 1
    local basefmt=$1 base
    if [ "$basefmt" = raw ]; then
        base=base.img
        qimg create -q -f raw $base 2M && fill raw $base 2097152 65536 || return 1
    else
        base=base.qcow2
        qimg create -q -f qcow2 -o cluster_size=4k $base 2M && fill qcow2 $base 2097152 65536 || return 1
    fi
    qimg create -q -f qcow2 -o "compat=$2" -b $base -F "$basefmt" top.qcow2 3M &&
        fill2 qcow2 top.qcow2 3145728 65536 && drop_backing_format top.qcow2 || return 1
    # qemu-img no longer reports a backing format: the precondition
    if qimg info --output=json top.qcow2 | grep -q backing-filename-format; then
        diag "setup: backing format still recorded"; return 1
    fi
    cmp_map top.qcow2 || return 1
    cmp_info top.qcow2 --backing-chain || return 1
    cmp_info top.qcow2 || return 1
    rm -f ref.raw out.raw
    qimg convert -O raw top.qcow2 ref.raw || return 1
    qc export top.qcow2 out.raw
    expect_rc 0 || return 1
    expect_same_bytes ref.raw out.raw
}
tcase "backing format not recorded, probed qcow2 (v3)" case_probed qcow2 1.1
tcase "backing format not recorded, probed raw (v3)" case_probed raw 1.1
tcase "backing format not recorded, probed qcow2 (v2)" case_probed qcow2 0.10
tcase "backing format not recorded, probed raw (v2)" case_probed raw 0.10

# ----------------------------------------------------- data files below

case_datafile_base() {
    cd "$(casedir dfbase)" || return 1
    qimg create -q -f qcow2 -o data_file=base.data,data_file_raw=on base.qcow2 2M &&
        fill qcow2 base.qcow2 2097152 65536 &&
        qimg create -q -f qcow2 -o cluster_size=4k -b base.qcow2 -F qcow2 top.qcow2 2M &&
        fill2 qcow2 top.qcow2 2097152 65536 || return 1
    all_three top.qcow2
}
tcase "overlay over an image with a raw external data file" case_datafile_base

# ---------------------------------------------------- missing backing files

mk_missing() {
    qimg create -q -f qcow2 -o cluster_size=4k base.qcow2 1M &&
        qio -f qcow2 -c "write -P 0x41 0 4k" base.qcow2 &&
        qimg create -q -f qcow2 -o cluster_size=4k -b base.qcow2 -F qcow2 mid.qcow2 1M &&
        qio -f qcow2 -c "write -P 0x42 4k 4k" mid.qcow2 &&
        qimg create -q -f qcow2 -o cluster_size=4k -b mid.qcow2 -F qcow2 top.qcow2 1M &&
        qio -f qcow2 -c "write -P 0x43 8k 4k" top.qcow2 &&
        rm "$1"
}

case_missing_map() {
    cd "$(casedir missing-map)" || return 1
    mk_missing base.qcow2 || return 1
    qc map mid.qcow2
    expect_failure map mid.qcow2 || return 1
    # the message names the missing file and the image that wants it
    expect_stderr_match "base\.qcow2" || return 1
    expect_stderr_match "'mid\.qcow2'.*'mid\.qcow2'|of 'mid\.qcow2'|mid\.qcow2.*(wants|needs|of)" || return 1
    qc map --output=json mid.qcow2
    expect_failure map mid.qcow2
}
tcase "missing backing file: map fails naming it and its user" case_missing_map

case_missing_map_deep() {
    cd "$(casedir missing-deep)" || return 1
    mk_missing base.qcow2 || return 1
    qc map top.qcow2
    expect_failure map top.qcow2 || return 1
    expect_stderr_match "base\.qcow2" || return 1
    # the image that wants base.qcow2 is mid.qcow2, not top.qcow2
    expect_stderr_match "mid\.qcow2"
}
tcase "missing backing file two levels down: map names the middle image" case_missing_map_deep

case_missing_export() {
    cd "$(casedir missing-export)" || return 1
    mk_missing base.qcow2 || return 1
    qc export top.qcow2 out.raw
    expect_failure export top.qcow2 || return 1
    expect_stderr_match "mid\.qcow2" || return 1
    if [ -e out.raw ]; then diag "failed export left out.raw behind"; return 1; fi
}
tcase "missing backing file: export fails, leaves no output" case_missing_export

case_missing_info() {
    cd "$(casedir missing-info)" || return 1
    mk_missing base.qcow2 || return 1
    qc info mid.qcow2
    expect_rc 0 || return 1
    expect_stderr_match "^qchain-info: warning: .*base\.qcow2" || return 1
    grep -q '^image: mid.qcow2' "$QC_OUT" || { diag "no 'image: mid.qcow2' line"; diag_file "$QC_OUT"; return 1; }
    # json: same keys as qemu-img info, which reads the image alone too
    cmp_info mid.qcow2 || return 1
    expect_stderr_match "warning"
}
tcase "missing backing file: info exits 0 with a warning" case_missing_info

case_missing_info_chain() {
    cd "$(casedir missing-info-chain)" || return 1
    mk_missing base.qcow2 || return 1
    qc info --backing-chain mid.qcow2
    expect_failure info mid.qcow2 || return 1
    qc info --backing-chain --output=json top.qcow2
    expect_failure info top.qcow2 || return 1
    expect_stderr_match "base\.qcow2"
}
tcase "missing backing file: info --backing-chain fails" case_missing_info_chain

case_missing_info_top() {
    cd "$(casedir missing-info-top)" || return 1
    mk_missing base.qcow2 || return 1
    # top's own backing file exists: nothing to warn about
    qc info top.qcow2
    expect_rc 0
}
tcase "backing file of the backing file missing: info of the top exits 0" case_missing_info_top

case_missing_middle() {
    cd "$(casedir missing-mid)" || return 1
    mk_missing mid.qcow2 || return 1
    qc export top.qcow2 out.raw
    expect_failure export top.qcow2 || return 1
    expect_stderr_match "mid\.qcow2" || return 1
    qc map top.qcow2
    expect_failure map top.qcow2 || return 1
    # base.qcow2 alone is fine
    cmp_map base.qcow2
}
tcase "missing middle layer: export and map fail" case_missing_middle

case_backing_is_dir() {
    cd "$(casedir backing-dir)" || return 1
    mkdir base.qcow2 &&
        qimg create -q -f qcow2 -u -b base.qcow2 -F qcow2 top.qcow2 1M || return 1
    qc map top.qcow2
    expect_failure map top.qcow2 || return 1
    qc export top.qcow2 out.raw
    expect_failure export top.qcow2 || return 1
    [ ! -e out.raw ] || { diag "out.raw left behind"; return 1; }
}
tcase "backing file is a directory: map and export fail" case_backing_is_dir

case_backing_empty_file() {
    cd "$(casedir backing-empty)" || return 1
    : > base.qcow2 &&
        qimg create -q -f qcow2 -u -b base.qcow2 -F qcow2 top.qcow2 1M || return 1
    qc map top.qcow2
    expect_failure map top.qcow2 || return 1
    expect_stderr_match "base\.qcow2"
}
tcase "backing file recorded as qcow2 is empty: map fails" case_backing_empty_file

case_human_chain() {
    cd "$(casedir human-chain)" || return 1
    build_chain "raw 1M" "qcow2 1M cluster_size=512" "qcow2 2M" > /dev/null || return 1
    qc info --backing-chain l2.qcow2
    expect_rc 0 || return 1
    local n
    n=$(grep -c '^image: ' "$QC_OUT")
    expect_eq "number of 'image:' lines in info --backing-chain" 3 "$n"
}
tcase "info --backing-chain human output lists every layer" case_human_chain

finish
