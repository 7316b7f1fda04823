#!/bin/bash
# damaged.sh - damaged and orphaned images (issue 18, part A), held
# against qemu-img:
#  - orphan layers: an overlay whose backing file is missing or unusable.
#    qchain-map --all-layers lists the layers that open, each equal to
#    `qemu-img map` of that layer opened with "backing": null, and warns
#    where the chain stops; qchain-info equals `qemu-img info` of the
#    json: backing:null form; qchain-check of the layer's own structure
#    exits as `qemu-img check` of that form, with the same counters.
#  - a snapshot table cut by a truncation (its start, inside entry 0,
#    inside the last entry), on 64 KiB-cluster v3 and 4 KiB-cluster v2
#    images: qchain-info and qchain-check exit as qemu-img info/check
#    (0; 2 or 3), with the same counters, and a warning giving the offset; the current view maps as
#    qemu-img map maps it and exports as qemu-img convert converts it;
#    -s of a snapshot is refused cleanly; writers refuse the image;
#    qchain-check -r all drops the table, after which qemu-img check is
#    clean and the current view is what qemu-img convert read before.
. "$(dirname "$0")/lib.sh"
need_qemu
need_python

COMPARE="$CLI_DIR/forensic_compare.py"

# alone FILE: the json: name that opens a qcow2 FILE without its backing
alone() {
    printf 'json:{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"%s"}}' "$1"
}

# ---------------------------------------------------------- orphan layers

# base (0x41 at 0, 64k) <- mid (0x42 at 64k, a compressed cluster at
# 256k) <- top (0x43 at 128k, zeros at 192k, a discard over the base's
# data); 4 KiB clusters for mid
mk_chain() {
    qimg create -q -f qcow2 base.qcow2 1M &&
        qio -f qcow2 -c "write -P 0x41 0 64k" base.qcow2 &&
        qimg create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 mid.qcow2 1M &&
        qio -f qcow2 -c "write -P 0x42 64k 64k" -c "write -c -P 0x44 256k 4k" mid.qcow2 &&
        qimg create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 1M &&
        qio -f qcow2 -c "write -P 0x43 128k 64k" -c "write -z 192k 64k" -c "discard 0 64k" top.qcow2
}

# all_layers TOP DEPTHS FILE...: map --all-layers exits 0, each listed
# layer equals qemu-img map of it alone, nothing listed at DEPTHS or below,
# and a warning says where the chain stops
all_layers() {
    local top=$1 depths=$2 d=0 f rc=0
    shift 2
    qc map --all-layers --output=json "$top"
    expect_rc 0 || return 1
    expect_stderr_match "^qchain-map: warning: '$top': .*the chain stops at depth $depths" || return 1
    cp "$QC_OUT" all.json
    for f in "$@"; do
        qimg map --output=json "$(alone "$f")" > ref.json || return 1
        if ! $PY "$COMPARE" layer ref.json all.json "$d" "$f" > cmp.log; then
            diag "depth $d ($f):"; diag_file cmp.log 20; rc=1
        fi
        d=$((d + 1))
    done
    [ "$d" -eq "$depths" ] || { diag "test error: $d files for $depths layers"; return 1; }
    $PY -c 'import json,sys; sys.exit(any(e["depth"] >= int(sys.argv[2]) for e in json.load(open(sys.argv[1]))))' all.json "$depths" ||
        { diag "entries at depth $depths or deeper"; rc=1; }
    # the human form lists the same entries
    qc map --all-layers "$top"
    expect_rc 0 || return 1
    cp "$QC_OUT" all.txt
    $PY "$COMPARE" human all.json all.txt > cmp.log || { diag "human form:"; diag_file cmp.log 20; rc=1; }
    return $rc
}

# info_alone FILE: qchain-info FILE (exit 0, a warning naming WANTED)
# equals qemu-img info of FILE opened alone
info_alone() {
    local f=$1 wanted=$2
    qimg info --output=json "$(alone "$f")" > info.ref || return 1
    qc info --output=json "$f"
    expect_rc 0 || return 1
    expect_stderr_match "^qchain-info: warning: '$f': .*$wanted" || return 1
    cp "$QC_OUT" info.out
    $PY "$INFO_COMPARE" info.ref info.out > info.diff 2>&1 ||
        { diag "info disagrees with qemu-img info of the json: form:"; diag_file info.diff 20; return 1; }
}

# check_alone FILE WANTED [ARGS...]: qchain-check exits as qemu-img check
# of FILE alone, same counters, a warning naming WANTED
check_alone() {
    local f=$1 wanted=$2 qrc
    shift 2
    "$QEMU_IMG" check --output=json "$@" "$(alone "$f")" > check.ref 2> check.ref.err
    qrc=$?
    qc check --output=json "$@" "$f"
    expect_rc "$qrc" || return 1
    expect_clean || return 1
    expect_stderr_match "^qchain-check: warning: '$f': .*$wanted" || return 1
    cp "$QC_OUT" check.out
    $PY -c 'import json,sys; r=json.load(open(sys.argv[1])); r["filename"]=sys.argv[2]; json.dump(r, open(sys.argv[1], "w"))' check.ref "$f" || return 1
    $PY "$CLI_DIR/check_compare.py" check.ref check.out > check.diff 2>&1 ||
        { diag "check $* disagrees with qemu-img:"; diag_file check.diff; return 1; }
}

case_orphan_base() {
    cd "$(casedir orphan-base)" && mk_chain && mv base.qcow2 gone.qcow2 || return 1
    all_layers top.qcow2 2 top.qcow2 mid.qcow2 || return 1
    expect_stderr_match "base\.qcow2.*mid\.qcow2|mid\.qcow2.*base\.qcow2" || return 1
    info_alone mid.qcow2 "base\.qcow2" || return 1
    check_alone mid.qcow2 "base\.qcow2" || return 1
    expect_rc 0 || return 1
    # the chain's own view still needs the whole chain
    qc map top.qcow2
    expect_failure map top.qcow2
}
tcase "orphan: base missing: the two upper layers listed, info/check of mid alone" case_orphan_base

case_orphan_mid() {
    cd "$(casedir orphan-mid)" && mk_chain && rm mid.qcow2 || return 1
    all_layers top.qcow2 1 top.qcow2 || return 1
    expect_stderr_match "mid\.qcow2" || return 1
    info_alone top.qcow2 "mid\.qcow2" || return 1
    local m
    for m in "" "-r leaks" "-r all"; do
        # shellcheck disable=SC2086
        check_alone top.qcow2 "mid\.qcow2" $m || return 1
        expect_rc 0 || return 1
    done
}
tcase "orphan: middle layer missing: the top listed alone, check -r of the top" case_orphan_mid

# an unusable backing file (recorded as qcow2, its header cut short): not
# missing, but it does not open either
case_orphan_unusable() {
    cd "$(casedir orphan-unusable)" && mk_chain && truncate -s 40 base.qcow2 || return 1
    all_layers top.qcow2 2 top.qcow2 mid.qcow2 || return 1
    info_alone mid.qcow2 "base\.qcow2" || return 1
    check_alone mid.qcow2 "base\.qcow2"
}
tcase "orphan: backing file cut to 40 bytes: listed down to it, warnings" case_orphan_unusable

# a loop: a -> b -> a; each layer opens alone (qemu-img too)
case_orphan_loop() {
    cd "$(casedir orphan-loop)" || return 1
    qimg create -q -f qcow2 a.qcow2 1M && qimg create -q -f qcow2 b.qcow2 1M &&
        qio -f qcow2 -c "write -P 0x61 0 64k" a.qcow2 &&
        qio -f qcow2 -c "write -P 0x62 64k 64k" b.qcow2 &&
        qimg rebase -q -u -f qcow2 -b b.qcow2 -F qcow2 a.qcow2 &&
        qimg rebase -q -u -f qcow2 -b a.qcow2 -F qcow2 b.qcow2 || return 1
    all_layers a.qcow2 2 a.qcow2 b.qcow2 || return 1
    expect_stderr_match "loop" || return 1
    info_alone a.qcow2 "loop" || return 1
    check_alone a.qcow2 "loop"
}
tcase "orphan: a backing loop: both layers listed once, the loop said" case_orphan_loop

# -------------------------------------------------- truncated snapshot table

# mk_snap FILE OPTS: data, snapshot s1, more data (and a discard), s2:
# the snapshot table is written last, at the end of the file (a cut
# through it loses nothing else)
mk_snap() {
    qimg create -q -f qcow2 -o "$2" "$1" 2M &&
        qio -f qcow2 -c "write -P 0x51 0 256k" -c "write -P 0x52 1M 64k" "$1" &&
        qimg snapshot -c s1 "$1" &&
        qio -f qcow2 -c "write -P 0x53 128k 256k" -c "discard 1M 64k" \
            -c "write -P 0x54 1536k 4k" "$1" &&
        qimg snapshot -c s2 "$1"
}

# field FILE OFFSET FMT: a header field
field() {
    $PY -c 'import struct,sys; f=open(sys.argv[1],"rb"); f.seek(int(sys.argv[2])); fmt=">"+sys.argv[3]; print(struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0])' "$@"
}

# last_entry FILE: offset of the snapshot table's last entry
last_entry() {
    $PY -c '
import struct, sys
f = open(sys.argv[1], "rb")
h = f.read(72)
n, off = struct.unpack(">I", h[60:64])[0], struct.unpack(">Q", h[64:72])[0]
pos = off
for i in range(n):
    pos = (pos + 7) & ~7
    last = pos
    f.seek(pos)
    fx = f.read(40)
    pos += 40 + struct.unpack(">I", fx[36:40])[0] + struct.unpack(">H", fx[12:14])[0] + struct.unpack(">H", fx[14:16])[0]
print(last)' "$1"
}

# case_snaptable OPTS WHERE: truncate through the table (WHERE: start, at
# its first byte; entry0, 20 bytes into entry 0; last, 20 bytes into the
# last entry).  (A cut through the last entry's name alone is not here:
# QEMU reads the missing bytes as zeros, finds a valid entry and its check
# exits 0; qchain leaves any table that runs past the end aside, and its
# check says so with exit 2.)
case_snaptable() {
    local opts=$1 where=$2 off size cut qrc
    cd "$(casedir "snap-$where-${opts//[,=]/_}")" || return 1
    mk_snap d.qcow2 "$opts" || return 1
    off=$(field d.qcow2 64 Q) && size=$(stat -c %s d.qcow2) || return 1
    [ "$(field d.qcow2 60 I)" -eq 2 ] || { diag "test error: 2 snapshots expected"; return 1; }
    case $where in
    start) cut=$off ;;
    entry0) cut=$((off + 20)) ;;
    last) cut=$(( $(last_entry d.qcow2) + 20 )) ;;
    esac
    [ "$cut" -ge "$off" ] && [ "$cut" -lt "$size" ] || { diag "test error: cut $cut, table $off, size $size"; return 1; }
    truncate -s "$cut" d.qcow2 || return 1
    # info: qemu-img opens it; so do we, saying where the table is broken
    "$QEMU_IMG" info d.qcow2 > /dev/null 2>&1
    qrc=$?
    qc info d.qcow2
    expect_rc "$qrc" || return 1
    expect_rc 0 || return 1
    expect_stderr_match "^qchain-info: warning: 'd\.qcow2': snapshot table.*\(at offset 0x[0-9a-f]+\)" || return 1
    # check: qemu-img finds errors (exit 2), or on version 2 images whose
    # zero-read entries are valid leaks only (3) or nothing (0); so do we
    "$QEMU_IMG" check d.qcow2 > /dev/null 2>&1
    qrc=$?
    qc check d.qcow2
    expect_rc "$qrc" || return 1
    expect_clean || return 1
    # with the same counters (the entries read with zeros past the end,
    # as QEMU reads them)
    "$QEMU_IMG" check --output=json d.qcow2 > check.ref 2> /dev/null
    qc check --output=json d.qcow2
    expect_rc "$qrc" || return 1
    cp "$QC_OUT" check.out
    $PY "$CLI_DIR/check_compare.py" check.ref check.out > check.diff 2>&1 ||
        { diag "check disagrees with qemu-img:"; diag_file check.diff; return 1; }
    # the current view: map and export as qemu-img
    qimg map --output=json d.qcow2 > map.ref || return 1
    qc map --output=json d.qcow2
    expect_rc 0 || return 1
    cp "$QC_OUT" map.out
    expect_same_text map.ref map.out "map --output=json" || return 1
    rm -f ref.raw out.raw
    qimg convert -O raw d.qcow2 ref.raw || return 1
    qc export d.qcow2 out.raw
    expect_rc 0 || return 1
    expect_same_bytes ref.raw out.raw || return 1
    # a snapshot view needs the table: refused, nothing left behind
    rm -f s1.raw
    qc export -s s1 d.qcow2 s1.raw
    expect_failure export d.qcow2 || return 1
    expect_stderr_match "snapshot table" || return 1
    [ ! -e s1.raw ] || { diag "s1.raw left behind"; return 1; }
    # a writer refuses it (a commit into it), leaving it as it was
    cp d.qcow2 before.qcow2
    qimg create -q -f qcow2 -u -b d.qcow2 -F qcow2 o.qcow2 2M &&
        qio -f qcow2 -c "write -P 0x55 0 64k" o.qcow2 || return 1
    qc commit o.qcow2
    expect_rc 1 || return 1
    expect_stderr_match "snapshot table" || return 1
    expect_same_bytes before.qcow2 d.qcow2 || return 1
    # -r all: the table dropped, the refcounts repaired; qemu-img check is
    # clean and the current view is what qemu-img read before the repair
    qc check -r all d.qcow2
    expect_rc 0 || return 1
    expect_clean || return 1
    qimg check d.qcow2 > qcheck.log 2>&1 || { diag "qemu-img check after -r all:"; diag_file qcheck.log 20; return 1; }
    qimg compare -q ref.raw d.qcow2 || { diag "the current view changed"; return 1; }
    [ "$(field d.qcow2 60 I)" -eq 0 ] && [ "$(field d.qcow2 64 Q)" -eq 0 ] ||
        { diag "nb_snapshots/snapshots_offset not zeroed"; return 1; }
    qc info d.qcow2
    expect_rc 0 || return 1
    [ ! -s "$QC_ERR" ] || { diag "info still warns:"; diag_file "$QC_ERR"; return 1; }
    qc check d.qcow2
    expect_rc 0
}
for o in "cluster_size=65536" "cluster_size=4096,compat=0.10"; do
    for w in start entry0 last; do
        tcase "snapshot table truncated ($w, $o): info/check as qemu-img, view, repair" case_snaptable "$o" "$w"
    done
done

# a table cut by the end of the file whose entries do not parse even with
# zeros (entry 0's L1 table offset poked off its cluster boundary): left
# aside, the image read without snapshots; info and check exit as
# qemu-img's; -r leaks repairs nothing (the lost snapshots' clusters stay
# while the header names their table); -r all drops the table as above
case_snaptable_garbage() {
    local off qrc l1
    cd "$(casedir snap-garbage)" || return 1
    mk_snap d.qcow2 cluster_size=65536 || return 1
    off=$(field d.qcow2 64 Q) && l1=$(field d.qcow2 "$off" Q) || return 1
    $PY -c 'import struct,sys; f=open(sys.argv[1],"r+b"); f.seek(int(sys.argv[2])); f.write(struct.pack(">Q", int(sys.argv[3]) + 8))' d.qcow2 "$off" "$l1" || return 1
    truncate -s $(( $(last_entry d.qcow2) + 20 )) d.qcow2 || return 1
    "$QEMU_IMG" info d.qcow2 > /dev/null 2>&1
    qrc=$?
    qc info d.qcow2
    expect_rc "$qrc" || return 1
    expect_stderr_match "snapshot table runs past the end of the file.*invalid.*not aligned" || return 1
    "$QEMU_IMG" check d.qcow2 > /dev/null 2>&1
    qrc=$?
    cp d.qcow2 before.qcow2
    qc check -r leaks d.qcow2
    expect_rc "$qrc" || return 1
    expect_same_bytes before.qcow2 d.qcow2 || return 1
    rm -f ref.raw && qimg convert -O raw d.qcow2 ref.raw || return 1
    qc check -r all d.qcow2
    expect_rc 0 || return 1
    qimg check d.qcow2 > qcheck.log 2>&1 || { diag "qemu-img check after -r all:"; diag_file qcheck.log 20; return 1; }
    qimg compare -q ref.raw d.qcow2 || { diag "the current view changed"; return 1; }
}
tcase "snapshot table that does not parse: left aside, -r leaks changes nothing, -r all drops it" case_snaptable_garbage

# ------------------------------------------------ bitmap directory cut

# qemu-img refuses an image whose bitmap directory the file's end cuts
# (info and check exit 1); qchain reads the current view without the
# bitmaps (a warning with the directory's offset), and its check, which
# cannot judge the bitmaps, exits 1 like qemu-img's and repairs nothing
case_bitmaps_cut() {
    local doff qrc
    cd "$(casedir bitmaps-cut)" || return 1
    qimg create -q -f qcow2 b.qcow2 4M && qimg bitmap --add b.qcow2 b0 &&
        qio -f qcow2 -c "write -P 0x61 0 1M" b.qcow2 &&
        qimg bitmap --add b.qcow2 b1 || return 1
    rm -f ref.raw && qimg convert -O raw b.qcow2 ref.raw || return 1
    doff=$($PY -c '
import struct, sys
b = open(sys.argv[1], "rb").read(65536)
off = struct.unpack(">I", b[100:104])[0]
while True:
    t, l = struct.unpack(">II", b[off:off + 8])
    if t == 0: sys.exit(1)
    if t == 0x23852875:
        print(struct.unpack(">Q", b[off + 24:off + 32])[0]); break
    off += 8 + ((l + 7) & ~7)' b.qcow2) || return 1
    [ "$(stat -c %s b.qcow2)" -gt $((doff + 16)) ] || { diag "test error: the directory is not last"; return 1; }
    truncate -s $((doff + 16)) b.qcow2 && cp b.qcow2 before.qcow2 || return 1
    "$QEMU_IMG" info b.qcow2 > /dev/null 2>&1
    qrc=$?
    [ "$qrc" -eq 1 ] || { diag "qemu-img info now opens it (exit $qrc): revisit"; return 1; }
    qc info --output=json b.qcow2
    expect_rc 0 || return 1
    expect_stderr_match "^qchain-info: warning: 'b\.qcow2': bitmap directory 0x[0-9a-f]+\+[0-9]+ lies past the end of the file \(at offset 0x" || return 1
    rm -f out.raw
    qc export b.qcow2 out.raw
    expect_rc 0 || return 1
    expect_same_bytes ref.raw out.raw || return 1
    "$QEMU_IMG" check b.qcow2 > /dev/null 2>&1
    qrc=$?
    local m
    for m in "" "-r leaks" "-r all"; do
        # shellcheck disable=SC2086
        qc check $m b.qcow2
        expect_rc "$qrc" || return 1
        expect_stderr_match "bitmap directory is unusable" || return 1
        expect_same_bytes before.qcow2 b.qcow2 || return 1
    done
}
tcase "bitmap directory cut: the current view without bitmaps; check exits as qemu-img's, repairs nothing" case_bitmaps_cut

finish
