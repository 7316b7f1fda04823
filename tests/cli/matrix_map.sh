#!/bin/bash
# matrix_map.sh - `qchain-map --output=json IMAGE` equals
# `qemu-img map --output=json IMAGE` byte for byte for every image of the
# matrix (lib.sh matrix_build); the human output succeeds too.
. "$(dirname "$0")/lib.sh"
need_qemu
need_python

M=$TESTTMP/matrix
matrix_prepare "$M" || { echo "not ok - matrix build"; exit 1; }

case_map() {
    cd "$M" || return 1
    local img=$1
    qimg map --output=json "$img" > "$TESTTMP/map.ref" || return 1
    qc map --output=json "$img"
    expect_rc 0 || return 1
    if [ -s "$QC_ERR" ]; then diag "unexpected stderr:"; diag_file "$QC_ERR"; return 1; fi
    cp "$QC_OUT" "$TESTTMP/map.out"
    expect_same_text "$TESTTMP/map.ref" "$TESTTMP/map.out" "map --output=json $img"
}

case_map_human() {
    cd "$M" || return 1
    qc map "$1"
    expect_rc 0 || return 1
    if ! head -n 1 "$QC_OUT" | grep -q '^Offset'; then
        diag "human output does not start with the Offset header:"; diag_file "$QC_OUT" 5
        return 1
    fi
}

while read -r name file snaps; do
    tcase "map json $name" case_map "$file"
    tcase "map human $name" case_map_human "$file"
done < "$M/MATRIX"
finish
