#!/bin/bash
# matrix_export.sh - qchain-export IMAGE OUT is byte-identical to
# `qemu-img convert -O raw IMAGE ref.raw` for every image of the matrix
# (lib.sh matrix_build), and `qchain-export -s SNAP` to
# `qemu-img convert -l SNAP -O raw` for each internal snapshot (by name
# and by id).
. "$(dirname "$0")/lib.sh"
need_qemu
need_python

M=$TESTTMP/matrix
matrix_prepare "$M" || { echo "not ok - matrix build"; exit 1; }

case_export() {
    cd "$M" || return 1
    local img=$1 out=$TESTTMP/out.raw ref=$TESTTMP/ref.raw
    rm -f "$out" "$ref"
    qimg convert -O raw "$img" "$ref" || return 1
    qc export "$img" "$out"
    expect_rc 0 || return 1
    if [ -s "$QC_ERR" ]; then diag "unexpected stderr:"; diag_file "$QC_ERR"; return 1; fi
    expect_same_bytes "$ref" "$out"
}

case_export_snap() {
    cd "$M" || return 1
    local img=$1 snap=$2 out=$TESTTMP/out.raw ref=$TESTTMP/ref.raw
    rm -f "$out" "$ref"
    qimg convert -l "$snap" -O raw "$img" "$ref" || return 1
    qc export -s "$snap" "$img" "$out"
    expect_rc 0 || return 1
    expect_same_bytes "$ref" "$out"
}

# the output is sparse where the guest reads zeros: never more allocated
# than the reference convert output (which qemu-img writes sparse too),
# plus one 4 KiB block per data extent
case_export_sparse() {
    cd "$M" || return 1
    local img=$1 out=$TESTTMP/out.raw ref=$TESTTMP/ref.raw a b
    rm -f "$out" "$ref"
    qimg convert -O raw "$img" "$ref" || return 1
    qc export "$img" "$out"
    expect_rc 0 || return 1
    a=$(stat -c %b "$ref"); b=$(stat -c %b "$out")
    if [ "$b" -gt $((a + 64)) ]; then
        diag "export of $img allocates $b blocks, qemu-img convert $a"
        return 1
    fi
}

while read -r name file snaps; do
    case " $snaps " in *" -noexport "*) continue ;; esac
    tcase "export $name" case_export "$file"
    for s in $snaps; do
        tcase "export -s $s $name" case_export_snap "$file" "$s"
    done
done < "$M/MATRIX"
tcase "export sparse v3-c64k" case_export_sparse v3-c64k.qcow2
tcase "export sparse chain3" case_export_sparse c3-top.qcow2
tcase "export sparse zstd-c2M" case_export_sparse zstd-c2M.qcow2
finish
