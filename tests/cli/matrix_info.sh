#!/bin/bash
# matrix_info.sh - `qchain-info --output=json` agrees with
# `qemu-img info --output=json` (keys listed in info_compare.py) for every
# image of the matrix, alone and with --backing-chain.
. "$(dirname "$0")/lib.sh"
need_qemu
need_python

M=$TESTTMP/matrix
matrix_prepare "$M" || { echo "not ok - matrix build"; exit 1; }

case_info() {
    cd "$M" || return 1
    local img=$1
    shift
    qimg info --output=json "$@" "$img" > "$TESTTMP/info.ref" || return 1
    qc info --output=json "$@" "$img"
    expect_rc 0 || return 1
    cp "$QC_OUT" "$TESTTMP/info.out"
    if ! $PY "$INFO_COMPARE" "$TESTTMP/info.ref" "$TESTTMP/info.out" > "$TESTTMP/info.diff" 2>&1; then
        diag "qchain-info --output=json $* $img disagrees with qemu-img info:"
        diag_file "$TESTTMP/info.diff" 40
        return 1
    fi
}

case_info_human() {
    cd "$M" || return 1
    qc info "$@"
    expect_rc 0 || return 1
    if ! head -n 1 "$QC_OUT" | grep -q '^image: '; then
        diag "human output does not start with 'image: ':"; diag_file "$QC_OUT" 5
        return 1
    fi
}

while read -r name file snaps; do
    tcase "info json $name" case_info "$file"
    tcase "info json --backing-chain $name" case_info "$file" --backing-chain
    tcase "info human $name" case_info_human "$file"
done < "$M/MATRIX"
tcase "info human --backing-chain chain4" case_info_human --backing-chain c4-top.qcow2
finish
