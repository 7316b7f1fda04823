#!/bin/bash
# backing_names.sh - backing file names resolve as QEMU resolves them: a
# relative name is joined to the directory part of the path by which the
# referencing image was opened (a string operation, not realpath and not
# lexical normalisation; the kernel then resolves the joined path).  So the
# same overlay reached through a symlink in another directory finds a
# different backing file ('other/../base.qcow2'), and one reached through
# a symlinked directory finds the one beside the real directory.  Checked
# against qemu-img info (full-backing-filename, with --backing-chain too),
# qemu-img map and qemu-img convert, from several working directories.
. "$(dirname "$0")/lib.sh"
need_qemu
need_python

# The tree, in $TESTTMP/tree:
#   d1/base.qcow2          pattern 0x11 at 0
#   d1/d2/ovl.qcow2        -b ../base.qcow2 -F qcow2, 0x22 at 64k
#   base.qcow2             a decoy: 0xdd at 0, 0xde at 128k
#   other/link.qcow2       -> ../d1/d2/ovl.qcow2   (file symlink)
#   other2                 -> d1/d2                (directory symlink)
#   d3/top.qcow2           -b ../d1/d2/ovl.qcow2, 0x33 at 192k
#   nobase/link.qcow2      -> ../d1/d2/ovl.qcow2   (nobase/.. = tree: has
#                          the decoy; nobase2/x/link.qcow2 has no base)
T=$TESTTMP/tree
build_tree() {
    mkdir -p "$T/d1/d2" "$T/other" "$T/d3" "$T/nobase2/x" && cd "$T" || return 1
    qimg create -q -f qcow2 -o cluster_size=4k d1/base.qcow2 1M &&
        qio -f qcow2 -c "write -P 0x11 0 64k" -c "write -P 0x12 512k 4k" d1/base.qcow2 &&
        qimg create -q -f qcow2 -o cluster_size=64k -b ../base.qcow2 -F qcow2 d1/d2/ovl.qcow2 1M &&
        qio -f qcow2 -c "write -P 0x22 64k 4k" d1/d2/ovl.qcow2 &&
        qimg create -q -f qcow2 base.qcow2 1M &&
        qio -f qcow2 -c "write -P 0xdd 0 64k" -c "write -P 0xde 128k 4k" base.qcow2 &&
        ln -s ../d1/d2/ovl.qcow2 other/link.qcow2 &&
        ln -s d1/d2 other2 &&
        ln -s ../../d1/d2/ovl.qcow2 nobase2/x/link.qcow2 &&
        qimg create -q -f qcow2 -o cluster_size=512 -b ../d1/d2/ovl.qcow2 -F qcow2 d3/top.qcow2 1M &&
        qio -f qcow2 -c "write -P 0x33 192k 4k" d3/top.qcow2
}
if ! (build_tree) > "$TESTTMP/setup.log" 2>&1; then
    echo "not ok - setup"
    sed 's/^/# /' "$TESTTMP/setup.log"
    N_FAIL=$((N_FAIL + 1)); FAILED_CASES+=(setup)
    finish
fi

# check CWD IMAGE [CHAIN_OK]: from CWD, info (alone and --backing-chain),
# map and export of IMAGE agree with qemu-img
case_check() {
    cd "$1" || return 1
    local img=$2 scratch
    scratch=$(casedir "scratch")
    qimg info --output=json "$img" > "$scratch/info.ref" || return 1
    qc info --output=json "$img"
    expect_rc 0 || return 1
    cp "$QC_OUT" "$scratch/info.out"
    $PY "$INFO_COMPARE" "$scratch/info.ref" "$scratch/info.out" > "$scratch/diff" ||
        { diag "info $img from $PWD:"; diag_file "$scratch/diff"; return 1; }
    qimg info --output=json --backing-chain "$img" > "$scratch/info.ref" || return 1
    qc info --output=json --backing-chain "$img"
    expect_rc 0 || return 1
    cp "$QC_OUT" "$scratch/info.out"
    $PY "$INFO_COMPARE" "$scratch/info.ref" "$scratch/info.out" > "$scratch/diff" ||
        { diag "info --backing-chain $img from $PWD:"; diag_file "$scratch/diff"; return 1; }
    qimg map --output=json "$img" > "$scratch/map.ref" || return 1
    qc map --output=json "$img"
    expect_rc 0 || return 1
    cp "$QC_OUT" "$scratch/map.out"
    expect_same_text "$scratch/map.ref" "$scratch/map.out" "map $img from $PWD" || return 1
    qimg convert -O raw "$img" "$scratch/ref.raw" || return 1
    qc export "$img" "$scratch/out.raw"
    expect_rc 0 || return 1
    expect_same_bytes "$scratch/ref.raw" "$scratch/out.raw"
}

# full_backing CWD IMAGE WANT: qchain-info's full-backing-filename
case_full_backing() {
    cd "$1" || return 1
    local got
    qc info --output=json "$2"
    expect_rc 0 || return 1
    got=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1])).get("full-backing-filename"))' "$QC_OUT")
    expect_eq "full-backing-filename of $2 from $PWD" "$3" "$got" || return 1
    got=$("$QEMU_IMG" info --output=json "$2" |
        $PY -c 'import json,sys; print(json.load(sys.stdin).get("full-backing-filename"))')
    expect_eq "qemu-img's full-backing-filename (sanity)" "$3" "$got"
}

tcase "from the top dir: d1/d2/ovl.qcow2" case_check "$T" d1/d2/ovl.qcow2
tcase "from d1: d2/ovl.qcow2" case_check "$T/d1" d2/ovl.qcow2
tcase "from d1/d2: ovl.qcow2" case_check "$T/d1/d2" ovl.qcow2
tcase "from d3: ../d1/d2/ovl.qcow2" case_check "$T/d3" ../d1/d2/ovl.qcow2
tcase "from /: absolute path" case_check / "$T/d1/d2/ovl.qcow2"
tcase "from d1/d2: ./ovl.qcow2" case_check "$T/d1/d2" ./ovl.qcow2
tcase "from the top dir: d1//d2//ovl.qcow2" case_check "$T" d1//d2//ovl.qcow2
tcase "from the top dir: d3/../d1/d2/ovl.qcow2" case_check "$T" d3/../d1/d2/ovl.qcow2
tcase "full-backing-filename: d1/d2/ovl.qcow2" case_full_backing "$T" d1/d2/ovl.qcow2 d1/d2/../base.qcow2
tcase "full-backing-filename: ovl.qcow2" case_full_backing "$T/d1/d2" ovl.qcow2 ../base.qcow2
tcase "full-backing-filename: d1//d2//ovl.qcow2" case_full_backing "$T" d1//d2//ovl.qcow2 d1//d2//../base.qcow2

# symlinked file in another directory: backing resolves against other/,
# i.e. to the decoy base.qcow2 beside other/, as QEMU does
tcase "symlink other/link.qcow2: full-backing-filename other/../base.qcow2" \
    case_full_backing "$T" other/link.qcow2 other/../base.qcow2
tcase "symlink other/link.qcow2 from the top dir (reads the decoy base)" case_check "$T" other/link.qcow2
tcase "symlink link.qcow2 from other/" case_check "$T/other" link.qcow2
tcase "symlink by absolute path" case_check / "$T/other/link.qcow2"

case_symlink_content() {
    # the export through the symlink really differs from the real path's
    cd "$T" || return 1
    local s=$TESTTMP/content
    rm -rf "$s"; mkdir -p "$s"
    qc export other/link.qcow2 "$s/via-link.raw"
    expect_rc 0 || return 1
    qc export d1/d2/ovl.qcow2 "$s/direct.raw"
    expect_rc 0 || return 1
    if cmp -s "$s/via-link.raw" "$s/direct.raw"; then
        diag "export via other/link.qcow2 equals export via d1/d2/ovl.qcow2:" \
             "the backing name was resolved against the symlink's target (realpath)"
        return 1
    fi
}
tcase "symlink: content via the link differs from the real path" case_symlink_content

# symlinked directory: other2/../base.qcow2 is resolved by the kernel to
# d1/base.qcow2 (not lexically to the decoy ./base.qcow2)
tcase "directory symlink other2/ovl.qcow2: full-backing-filename" \
    case_full_backing "$T" other2/ovl.qcow2 other2/../base.qcow2
tcase "directory symlink other2/ovl.qcow2 (reads d1/base.qcow2)" case_check "$T" other2/ovl.qcow2

case_dir_symlink_content() {
    cd "$T" || return 1
    local s=$TESTTMP/content2
    rm -rf "$s"; mkdir -p "$s"
    qc export other2/ovl.qcow2 "$s/a.raw"; expect_rc 0 || return 1
    qc export d1/d2/ovl.qcow2 "$s/b.raw"; expect_rc 0 || return 1
    if ! cmp -s "$s/a.raw" "$s/b.raw"; then
        diag "export via other2/ovl.qcow2 differs from d1/d2/ovl.qcow2:" \
             "'other2/../base.qcow2' was normalised lexically instead of by the kernel"
        return 1
    fi
}
tcase "directory symlink: same content as the real path" case_dir_symlink_content

# a symlink whose directory has no base.qcow2 beside it: the chain is
# broken through that path even though the real overlay is fine
case_symlink_missing() {
    cd "$T" || return 1
    qc map nobase2/x/link.qcow2
    expect_failure map nobase2/x/link.qcow2 || return 1
    expect_stderr_match "nobase2/x/\.\./base\.qcow2" || return 1
    if "$QEMU_IMG" map nobase2/x/link.qcow2 > /dev/null 2>&1; then
        diag "qemu-img map succeeded (sanity check failed)"; return 1
    fi
    qc info nobase2/x/link.qcow2
    expect_rc 0 || return 1
    expect_stderr_match "warning" || return 1
    qc info --backing-chain nobase2/x/link.qcow2
    expect_failure info nobase2/x/link.qcow2
}
tcase "symlink with no base.qcow2 beside it: map fails, info warns" case_symlink_missing
tcase "symlink with no base.qcow2 beside it: full-backing-filename" \
    case_full_backing "$T" nobase2/x/link.qcow2 nobase2/x/../base.qcow2

# depth 3 across directories: every element of --backing-chain
tcase "d3/top.qcow2 -> ../d1/d2/ovl.qcow2 -> ../base.qcow2 from the top dir" case_check "$T" d3/top.qcow2
tcase "d3/top.qcow2 from d1/d2" case_check "$T/d1/d2" ../../d3/top.qcow2
tcase "d3/top.qcow2 by absolute path" case_check / "$T/d3/top.qcow2"

# a backing name through a directory that does not exist: the kernel
# refuses 'nodir/../base.qcow2', so must qchain (no lexical shortcut)
case_nonexistent_dir_component() {
    cd "$(casedir nodir)" || return 1
    qimg create -q -f qcow2 base.qcow2 1M &&
        qimg create -q -f qcow2 -u -b nodir/../base.qcow2 -F qcow2 top.qcow2 1M || return 1
    if "$QEMU_IMG" map top.qcow2 > /dev/null 2>&1; then
        diag "qemu-img map succeeded (sanity check failed)"; return 1
    fi
    qc map top.qcow2
    expect_failure map top.qcow2
}
tcase "backing name nodir/../base.qcow2 with no nodir: map fails like qemu-img" case_nonexistent_dir_component

# names needing escapes in JSON and in messages, a colon after a slash
case_odd_names() {
    local d
    d=$(casedir 'odd names') && cd "$d" || return 1
    mkdir -p 'sub dir' &&
        qimg create -q -f qcow2 'sub dir/bä"se\x.qcow2' 1M &&
        qio -f qcow2 -c "write -P 0x44 0 4k" 'sub dir/bä"se\x.qcow2' &&
        qimg create -q -f qcow2 -b 'sub dir/bä"se\x.qcow2' -F qcow2 'tóp.qcow2' 1M &&
        qimg create -q -f qcow2 -o cluster_size=4k ./odd:name.qcow2 1M &&
        qio -f qcow2 -c "write -P 0x45 4k 4k" ./odd:name.qcow2 &&
        qimg create -q -f qcow2 -u -b './odd:name.qcow2' -F qcow2 colon-top.qcow2 1M || return 1
    case_check "$d" 'tóp.qcow2' || return 1
    case_check "$d" colon-top.qcow2
}
tcase "names with spaces, quotes, backslashes, UTF-8 and a colon after ./" case_odd_names

finish
