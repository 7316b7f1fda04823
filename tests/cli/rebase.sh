#!/bin/bash
# rebase.sh - qchain-rebase against qemu-img rebase.  Each safe case runs
# both on copies of one chain and holds ours to: exit 0, the guest view
# unchanged (qemu-img compare with the view exported before), qemu-img
# check clean, the backing file and format qemu-img's rebase left, and
# the same clusters allocated in the image itself as qemu-img's rebase
# allocated (both copy exactly the (sub)clusters where the views differ).
# Cases: dropping a middle layer (its data copied, the shared base never
# read: the JSON's compared-bytes equal what the two chains' maps say
# differs), onto another base (zeros written as zero clusters), -b ""
# (flatten), a version 2 image, extended L2, compressed layers (zlib,
# zstd), backing files shorter than the image, a raw backing file; -u
# (header only, also -u -b ""); refusals: an image in use (named holder,
# file unchanged), a missing old chain (safe mode; -u works), a new
# backing that does not open, a loop, missing -b or -F (exit 2), -U; and
# README's copy-storage-inc workflow end to end.
. "$(dirname "$0")/lib.sh"
need_qemu
need_python

HOLDER_LOG=$TESTTMP/holder.log
HOLD_TRAP=1

# alloc0 IMAGE: the ranges the image allocates itself (qemu-img map of the
# chain, depth 0), merged, one "start end" per line.
alloc0() {
    "$QEMU_IMG" map --output=json "$1" | $PY -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    if e["depth"] == 0 and e.get("present", True):
        s, n = e["start"], e["length"]
        if out and out[-1][1] == s:
            out[-1][1] = s + n
        else:
            out.append([s, s + n])
for s, e in out:
    print(s, e)
'
}

# backing_of IMAGE: "NAME FORMAT" from qemu-img info ("-" when none).
backing_of() {
    "$QEMU_IMG" info --output=json "$1" | $PY -c '
import json, sys
i = json.load(sys.stdin)
print(i.get("backing-filename", "-"), i.get("backing-filename-format", "-"))
'
}

# json_get KEY: a key of the last qc stdout (JSON).
json_get() {
    $PY -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
        "$QC_OUT" "$1"
}

# safe_pair IMAGE REBASE-ARGS...: qemu-img rebase on a copy, ours on IMAGE.
safe_pair() {
    local img=$1 rc=0
    shift
    qimg convert -O raw "$img" before.raw || return 1
    cp --sparse=never "$img" "q-$img"
    qimg rebase "$@" "q-$img" || return 1
    qc rebase --output=json "$@" "$img"
    expect_rc 0 || return 1
    cp "$QC_OUT" rebase.json
    qc compare "$img" before.raw
    expect_rc 0 || { diag "the guest view changed:"; diag_file "$QC_OUT"; rc=1; }
    if ! "$QEMU_IMG" check "$img" > check.out 2>&1; then
        diag "qemu-img check is not clean:"
        diag_file check.out
        rc=1
    fi
    expect_eq "backing file and format" "$(backing_of "q-$img")" \
        "$(backing_of "$img")" || rc=1
    alloc0 "q-$img" > alloc.ref
    alloc0 "$img" > alloc.out
    expect_same_text alloc.ref alloc.out "clusters allocated in the image" ||
        rc=1
    return $rc
}

# A chain base <- mid <- top of 8 MiB (lib.sh's patterns: data, zeros,
# discards, partial clusters) in the cluster size $1 (default 64k), with
# extra create options $2 for all three.
mkchain() {
    local cs=${1:-64k} o=${2:-}
    mk_q base.qcow2 8M "cluster_size=$cs${o:+,$o}" &&
        qimg create -q -f qcow2 -o "cluster_size=$cs${o:+,$o}" \
            -b base.qcow2 -F qcow2 mid.qcow2 &&
        fill2 qcow2 mid.qcow2 8388608 "$(qsize "$cs")" &&
        qimg create -q -f qcow2 -o "cluster_size=$cs${o:+,$o}" \
            -b mid.qcow2 -F qcow2 top.qcow2 &&
        qio -c "write -P 0xc1 $((3 * $(qsize "$cs"))) $(qsize "$cs")" \
            -c "write -P 0xc2 5M 4k" top.qcow2
}

# The bytes a safe rebase of TOP from OLD's chain onto NEW must read: in
# the ranges TOP does not allocate, where the old chain's answer (qemu-img
# map of TOP's chain at depth >= 1) is neither zeros on both sides nor the
# same host bytes of the same file as the new chain's answer.
want_compared() {
    local top=$1 new=$2
    "$QEMU_IMG" map --output=json "$top" > old.map &&
        "$QEMU_IMG" map --output=json "$new" > new.map &&
        "$QEMU_IMG" info --backing-chain --output=json "$top" > old.chain &&
        "$QEMU_IMG" info --backing-chain --output=json "$new" > new.chain &&
        $PY - <<'EOF'
import json, os, sys
old = json.load(open("old.map"))
new = json.load(open("new.map"))
def files(chain):
    return [os.stat(i["filename"]) for i in json.load(open(chain))]
for m, c in ((old, "old.chain"), (new, "new.chain")):
    st = files(c)
    for e in m:
        e["id"] = (st[e["depth"]].st_dev, st[e["depth"]].st_ino)
def at(m, off):
    for e in m:
        if e["start"] <= off < e["start"] + e["length"]:
            return e
    return None
cuts = sorted({e["start"] for e in old} | {e["start"] for e in new} |
              {e["start"] + e["length"] for e in old} |
              {e["start"] + e["length"] for e in new})
total = 0
size = old[-1]["start"] + old[-1]["length"]
for a, b in zip(cuts, cuts[1:]):
    if a >= size:
        break
    o = at(old, a)
    if o["depth"] == 0 and o["present"]:
        continue
    n = at(new, a) or {"zero": True, "data": False}
    if o["zero"] and n["zero"]:
        continue
    if (o.get("offset") is not None and n.get("offset") is not None and
            o["offset"] - o["start"] == n["offset"] - n["start"] and
            o["id"] == n["id"]):
        continue
    total += b - a
print(total)
EOF
}

case_drop_middle() {
    local want
    cd "$(casedir drop_middle)" || return 1
    mkchain || return 1
    want=$(want_compared top.qcow2 base.qcow2) || return 1
    safe_pair top.qcow2 -b base.qcow2 -F qcow2 || return 1
    cp rebase.json "$QC_OUT"
    expect_eq "compared-bytes (reads outside the shared base)" "$want" \
        "$(json_get compared-bytes)"
}

# Onto an unrelated base: where the old view reads zeros and the new base
# has data, zero clusters are written (present, zero, no data).
case_other_base() {
    local want
    cd "$(casedir other_base)" || return 1
    mkchain || return 1
    qimg create -q -f qcow2 other.qcow2 8M &&
        qio -c "write -P 0xee 0 8M" other.qcow2 || return 1
    want=$(want_compared top.qcow2 other.qcow2) || return 1
    safe_pair top.qcow2 -b other.qcow2 -F qcow2 || return 1
    cp rebase.json "$QC_OUT"
    expect_eq "compared-bytes" "$want" "$(json_get compared-bytes)" ||
        return 1
    if [ "$(json_get zero-bytes)" = 0 ]; then
        diag "no zeros written as zero clusters"
        return 1
    fi
    # the map agrees: zero clusters at depth 0
    "$QEMU_IMG" map --output=json top.qcow2 | $PY -c '
import json, sys
z = [e for e in json.load(sys.stdin)
     if e["depth"] == 0 and e["zero"] and not e["data"]]
sys.exit(0 if z else 1)' || { diag "no zero clusters in the map"; return 1; }
}

case_flatten() {
    cd "$(casedir flatten)" || return 1
    mkchain || return 1
    safe_pair top.qcow2 -b "" || return 1
    expect_eq "backing" "- -" "$(backing_of top.qcow2)"
}

# version 2 images have no zero flag: zeros the old view read where the
# new base has data are written out
case_v2() {
    cd "$(casedir v2)" || return 1
    mkchain 64k compat=0.10 || return 1
    qimg create -q -f qcow2 -o compat=0.10 other.qcow2 8M &&
        qio -c "write -P 0xee 0 8M" other.qcow2 || return 1
    safe_pair top.qcow2 -b other.qcow2 -F qcow2 || return 1
    cp top.qcow2 again.qcow2
    safe_pair again.qcow2 -b "" || return 1
}

case_extended_l2() {
    cd "$(casedir extended_l2)" || return 1
    mkchain 64k extended_l2=on || return 1
    safe_pair top.qcow2 -b base.qcow2 -F qcow2
}

case_small_clusters() {
    cd "$(casedir small_clusters)" || return 1
    mkchain 4k || return 1
    qimg convert -O qcow2 -o cluster_size=2M base.qcow2 base2m.qcow2 || return 1
    safe_pair top.qcow2 -b base2m.qcow2 -F qcow2
}

case_compressed() {
    local t
    for t in zlib zstd; do
        cd "$(casedir "compressed_$t")" || return 1
        mkchain || return 1
        qimg convert -c -O qcow2 -o compression_type=$t -B base.qcow2 \
            -F qcow2 mid.qcow2 midc.qcow2 &&
            qimg rebase -u -b midc.qcow2 -F qcow2 top.qcow2 || return 1
        safe_pair top.qcow2 -b base.qcow2 -F qcow2 || return 1
    done
}

# backing files shorter than the image: the old base 3 MiB, the new one 1
# MiB; past their ends the views read zeros
case_short_backing() {
    cd "$(casedir short_backing)" || return 1
    qimg create -q -f qcow2 base.qcow2 3M &&
        qio -c "write -P 0x21 0 3M" base.qcow2 &&
        qimg create -q -f qcow2 small.qcow2 1M &&
        qio -c "write -P 0x31 0 1M" small.qcow2 &&
        qimg create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 8M &&
        qio -c "write -P 0x41 512k 64k" -c "write -P 0x42 7M 64k" \
            top.qcow2 || return 1
    safe_pair top.qcow2 -b small.qcow2 -F qcow2 || return 1
    cp small.qcow2 big.qcow2
    qimg resize -q big.qcow2 16M &&
        qio -c "write -P 0x51 5M 6M" big.qcow2 || return 1
    safe_pair top.qcow2 -b big.qcow2 -F qcow2
}

case_raw_backing() {
    cd "$(casedir raw_backing)" || return 1
    mkchain || return 1
    qimg convert -O raw top.qcow2 flat.raw || return 1
    safe_pair top.qcow2 -b flat.raw -F raw || return 1
    # everything equal to the new raw base: nothing was written
    cp rebase.json "$QC_OUT"
    expect_eq "data-bytes" 0 "$(json_get data-bytes)"
}

# -u changes the header only: the same backing name and format as
# qemu-img rebase -u, the image's own clusters untouched, check clean
case_unsafe() {
    local b
    cd "$(casedir unsafe)" || return 1
    mkchain || return 1
    for b in base.qcow2 "$PWD/../unsafe/mid.qcow2" ""; do
        cp --sparse=never top.qcow2 q-top.qcow2
        if [ -n "$b" ]; then
            qimg rebase -u -b "$b" -F qcow2 q-top.qcow2 || return 1
            qc rebase -u -b "$b" -F qcow2 top.qcow2
        else
            qimg rebase -u -b "" q-top.qcow2 || return 1
            qc rebase -u -b "" top.qcow2
        fi
        expect_rc 0 || return 1
        expect_eq "backing after -u -b '$b'" "$(backing_of q-top.qcow2)" \
            "$(backing_of top.qcow2)" || return 1
        "$QEMU_IMG" check top.qcow2 > check.out 2>&1 ||
            { diag "check after -u -b '$b':"; diag_file check.out; return 1; }
        qimg map --output=json q-top.qcow2 > map.ref &&
            qimg map --output=json top.qcow2 > map.out || return 1
        sed -i 's/q-top/top/g' map.ref
        expect_same_text map.ref map.out "map after -u -b '$b'" || return 1
    done
    # the stale name is not left in the header: qemu-img would not show it
    # and a hex dump should not either
    if grep -q "mid.qcow2" <(head -c 65536 top.qcow2); then
        diag "the old backing name is still in cluster 0"
        return 1
    fi
}

# An image a VM holds is refused, naming the holder; nothing changes.
case_in_use() {
    local sum
    cd "$(casedir in_use)" || return 1
    mkchain || return 1
    sum=$(sha256sum < top.qcow2)
    hold -n top.qcow2 || return 1
    qc rebase -b base.qcow2 -F qcow2 top.qcow2
    expect_failure rebase top.qcow2 || return 1
    expect_stderr_match "qemu-io \(pid $HOLDER\)" || return 1
    qc rebase -u -b base.qcow2 -F qcow2 top.qcow2
    expect_failure rebase top.qcow2 || return 1
    release
    expect_eq "top.qcow2 unchanged" "$sum" "$(sha256sum < top.qcow2)"
}

# Safe mode needs the old chain and the new file; -u needs neither.
case_missing() {
    local sum
    cd "$(casedir missing)" || return 1
    mkchain || return 1
    sum=$(sha256sum < top.qcow2)
    qc rebase -b nothere.qcow2 -F qcow2 top.qcow2
    expect_rc 1 && expect_stderr_match "nothere.qcow2" || return 1
    mv mid.qcow2 moved.qcow2
    qc rebase -b base.qcow2 -F qcow2 top.qcow2
    expect_failure rebase top.qcow2 && expect_stderr_match " -u " || return 1
    expect_eq "top.qcow2 unchanged" "$sum" "$(sha256sum < top.qcow2)" ||
        return 1
    qc rebase -u -b moved.qcow2 -F qcow2 top.qcow2
    expect_rc 0 || return 1
    qimg convert -O raw top.qcow2 a.raw &&
        qimg rebase -u -b mid.qcow2 -F qcow2 top.qcow2 &&
        mv moved.qcow2 mid.qcow2 && qimg convert -O raw top.qcow2 b.raw ||
        return 1
    expect_same_bytes b.raw a.raw
}

case_loop() {
    local sum
    cd "$(casedir loop)" || return 1
    mkchain || return 1
    sum=$(sha256sum < base.qcow2)
    qc rebase -b top.qcow2 -F qcow2 base.qcow2
    expect_failure rebase base.qcow2 && expect_stderr_match "itself" ||
        return 1
    expect_eq "base.qcow2 unchanged" "$sum" "$(sha256sum < base.qcow2)"
}

case_usage() {
    cd "$(casedir usage)" || return 1
    mkchain || return 1
    qc rebase top.qcow2
    expect_rc 2 || return 1
    qc rebase -b base.qcow2 top.qcow2
    expect_rc 2 && expect_stderr_match "format" || return 1
    qc rebase -U -b base.qcow2 -F qcow2 top.qcow2
    expect_rc 2 || return 1
    qc rebase -b base.qcow2 -F vmdk top.qcow2
    expect_rc 2 || return 1
    qc rebase -b base.qcow2 -F qcow2 -f raw top.qcow2
    expect_rc 1
}

# README's copy-storage-inc workflow: the base copied to another
# directory, proven equal by qchain-sum, the overlay moved and re-pointed
# with -u; its sum and content equal the source's; then a safe rebase onto
# a different base keeps the sum.
case_workflow() {
    local s1 s2 t1
    cd "$(casedir workflow)" || return 1
    mkdir src dst
    (cd src && mkchain) || return 1
    qimg rebase -u -b "$PWD/src/base.qcow2" -F qcow2 src/top.qcow2 &&
        qimg convert -O raw src/top.qcow2 src.raw || return 1
    qc sum src/top.qcow2; expect_rc 0 || return 1
    t1=$(cut -d' ' -f1 "$QC_OUT")
    cp src/base.qcow2 dst/base.qcow2
    qc sum src/base.qcow2; s1=$(cut -d' ' -f1 "$QC_OUT")
    qc sum dst/base.qcow2; s2=$(cut -d' ' -f1 "$QC_OUT")
    expect_eq "the copied base's sum" "$s1" "$s2" || return 1
    # the source host's files are not at the destination
    mv src/top.qcow2 dst/top.qcow2
    rm -r src
    qc rebase -u -b "$PWD/dst/base.qcow2" -F qcow2 dst/top.qcow2
    expect_rc 0 || return 1
    expect_eq "backing" "$PWD/dst/base.qcow2 qcow2" \
        "$(backing_of dst/top.qcow2)" || return 1
    qc sum dst/top.qcow2; expect_rc 0 || return 1
    expect_eq "the moved overlay's sum" "$t1" "$(cut -d' ' -f1 "$QC_OUT")" ||
        return 1
    qc compare dst/top.qcow2 src.raw; expect_rc 0 || return 1
    qimg create -q -f qcow2 dst/golden.qcow2 8M &&
        qio -c "write -P 0x5a 1M 3M" dst/golden.qcow2 || return 1
    qc rebase -b golden.qcow2 -F qcow2 dst/top.qcow2; expect_rc 0 || return 1
    qc sum dst/top.qcow2
    expect_eq "the sum after a safe rebase" "$t1" "$(cut -d' ' -f1 "$QC_OUT")"
}

tcase "the copy-storage-inc workflow of the README" case_workflow
tcase "rebase drops a middle layer, the base not read" case_drop_middle
tcase "rebase onto another base (zero clusters)" case_other_base
tcase "rebase -b '' flattens" case_flatten
tcase "rebase of version 2 images" case_v2
tcase "rebase with extended L2" case_extended_l2
tcase "rebase 4k clusters onto 2M clusters" case_small_clusters
tcase "rebase over compressed layers (zlib, zstd)" case_compressed
tcase "rebase with backing files shorter than the image" case_short_backing
tcase "rebase onto a raw file" case_raw_backing
tcase "rebase -u: the header only, as qemu-img" case_unsafe
tcase "rebase refuses an image in use" case_in_use
tcase "rebase with missing files" case_missing
tcase "rebase refuses a loop" case_loop
tcase "rebase usage errors" case_usage
finish
