#!/bin/bash
# bad_images.sh - every crafted bad image in tests/images/bad/ (made by
# tests/images/make-bad-images.py, described in tests/images/README.md) is
# refused cleanly: exit code exactly 1, stderr starting with
# "qchain-X: 'FILE': " and a message, no sanitizer report, no crash or
# hang, and a failed export leaves no OUTPUT.  Which commands must refuse
# which image depends on where the damage is (the image's kind; see the
# README).  Needs no qemu-img: the images are committed.
. "$(dirname "$0")/lib.sh"

BAD=$QCHAIN_IMAGES/bad

# name kind  (kinds: header data chain decode snap vmstate snaptable; see
# README.md)
IMAGES="
truncated-header header
truncated-header-v3 header
version-4 header
cluster-bits-8 header
cluster-bits-22 header
cluster-bits-64 header
header-length-short header
header-length-long header
ext-length-overflow header
ext-past-cluster header
unknown-incompat-bit header
refcount-order-7 header
size-huge header
l1-size-huge header
l1-size-zero header
l1-past-end header
l1-unaligned header
l2-past-end data
l2-unaligned data
data-past-end data
data-unaligned data
compressed-past-end data
compressed-offset-huge data
compressed-garbage-zlib decode
compressed-garbage-zstd decode
snapshot-count-huge header
snapshot-offset-past-end snaptable
snapshot-offset-unaligned header
snapshot-name-past-end snaptable
snapshot-l1-past-end snap
vmstate-size-past-l1 vmstate
vmstate-size-huge vmstate
vmstate-disk-size-huge vmstate
vmstate-data-past-end vmstate
backing-name-long header
backing-offset-overflow header
backing-self chain
backing-loop-a chain
backing-loop-b chain
backing-loop-3 chain
backing-nbd chain
backing-nbd-uri chain
backing-json chain
check-l1-over-header check
l2-shared-l1 data
backing-fifo chain
"

# refuse TOOL FILE ARGS...: qchain-TOOL ARGS... FILE fails properly
refuse() {
    local tool=$1 file=$2
    shift 2
    qc "$tool" "$@" "$file"
    expect_failure "$tool" "$file"
}

# refuse_header FILE: qchain-info refuses FILE but first prints every
# header field the file holds (human: the magic and the version at
# least; json: "refused" and the same header keys as an opened image)
refuse_header() {
    refuse info "$1" || return 1
    grep -qE '^    magic +0x514649fb$' "$QC_OUT" && grep -qE '^    version +[0-9]+$' "$QC_OUT" ||
        { diag "no header fields on stdout:"; diag_file "$QC_OUT"; return 1; }
    refuse info "$1" --output=json || return 1
    $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(not (d["refused"] and d["header"]["magic"] == 0x514649fb))' "$QC_OUT" ||
        { diag "json: no refused header:"; diag_file "$QC_OUT"; return 1; }
}

# accept TOOL FILE ARGS...: exit 0, something on stdout
accept() {
    local tool=$1 file=$2
    shift 2
    qc "$tool" "$@" "$file"
    expect_rc 0 || return 1
    if [ ! -s "$QC_OUT" ]; then diag "$QC_CMD: empty stdout"; return 1; fi
}

# accept_warned TOOL FILE ARGS...: accept, with a warning naming the
# snapshot table and its offset
accept_warned() {
    accept "$@" || return 1
    expect_stderr_match "^qchain-$1: warning: .*snapshot table.*at offset 0x"
}

# check_rc RC FILE: qchain-check FILE exits RC
check_rc() {
    qc check "$2"
    expect_rc "$1"
}

# export_refuse FILE [ARGS...]: exit 1, message, OUTPUT not left behind
export_refuse() {
    local file=$1 out=$TESTTMP/export.raw
    shift
    rm -f "$out"
    qc export "$@" "$file" "$out"
    expect_failure export "$file" || return 1
    if [ -e "$out" ]; then
        diag "$QC_CMD failed but left $out behind ($(stat -c %s "$out") bytes)"
        return 1
    fi
}

export_accept() {
    local file=$1 out=$TESTTMP/export.raw
    shift
    rm -f "$out"
    qc export "$@" "$file" "$out"
    expect_rc 0
}

# the committed files: all listed, each small, README mentions each
case_inventory() {
    local f n rc=0
    for f in "$BAD"/*.qcow2; do
        n=$(basename "$f" .qcow2)
        if ! printf '%s\n' "$IMAGES" | grep -q "^$n "; then
            diag "$f has no expectation in bad_images.sh"; rc=1
        fi
        if [ "$(stat -c %s "$f")" -ge 65536 ]; then
            diag "$f is $(stat -c %s "$f") bytes (limit 64 KiB)"; rc=1
        fi
        if ! grep -q "\`$n.qcow2\`" "$QCHAIN_IMAGES/README.md"; then
            diag "README.md does not describe $n.qcow2"; rc=1
        fi
    done
    while read -r n kind; do
        [ -n "$n" ] || continue
        [ -e "$BAD/$n.qcow2" ] || { diag "missing: $BAD/$n.qcow2"; rc=1; }
    done <<< "$IMAGES"
    return $rc
}
tcase "bad images: inventory, sizes, README" case_inventory

while read -r n kind; do
    [ -n "$n" ] || continue
    f=$BAD/$n.qcow2
    case $kind in
    header)
        tcase "$n: info fails" refuse info "$f"
        tcase "$n: info shows the header fields it read, then fails" refuse_header "$f"
        tcase "$n: info --output=json fails" refuse info "$f" --output=json
        tcase "$n: info --backing-chain fails" refuse info "$f" --backing-chain
        tcase "$n: map fails" refuse map "$f"
        tcase "$n: map --output=json fails" refuse map "$f" --output=json
        tcase "$n: export fails" export_refuse "$f"
        ;;
    data)
        tcase "$n: info shows the header" accept info "$f"
        tcase "$n: info --backing-chain shows the header" accept info "$f" --backing-chain --output=json
        tcase "$n: map fails" refuse map "$f"
        tcase "$n: map --output=json fails" refuse map "$f" --output=json
        tcase "$n: export fails" export_refuse "$f"
        ;;
    check)
        ;; # case_check_l1_over_header below
    chain)
        tcase "$n: info shows the image" accept info "$f"
        tcase "$n: info --backing-chain fails" refuse info "$f" --backing-chain
        tcase "$n: info --backing-chain --output=json fails" refuse info "$f" --backing-chain --output=json
        tcase "$n: map fails" refuse map "$f"
        tcase "$n: export fails" export_refuse "$f"
        tcase "$n: export -U fails" export_refuse "$f" -U
        ;;
    decode)
        tcase "$n: info shows the image" accept info "$f"
        tcase "$n: map maps it" accept map "$f" --output=json
        tcase "$n: export fails" export_refuse "$f"
        ;;
    snap)
        tcase "$n: info shows the image" accept info "$f" --output=json
        tcase "$n: map maps it" accept map "$f" --output=json
        tcase "$n: export of the active image works" export_accept "$f"
        tcase "$n: export -s s1 fails" export_refuse "$f" -s s1
        tcase "$n: export -s 1 fails" export_refuse "$f" -s 1
        ;;
    snaptable)
        # qemu-img opens these too (info 0, check 2): a warning with the
        # table's offset, the current view served without the table
        tcase "$n: info warns and shows the image" accept_warned info "$f"
        tcase "$n: info --output=json shows the image" accept_warned info "$f" --output=json
        tcase "$n: map maps it" accept_warned map "$f" --output=json
        tcase "$n: export of the active image works" export_accept "$f"
        tcase "$n: export -s s1 fails" export_refuse "$f" -s s1
        tcase "$n: check finds it corrupt (exit 2)" check_rc 2 "$f"
        ;;
    vmstate)
        tcase "$n: info shows the image" accept info "$f" --output=json
        tcase "$n: map --all-layers maps it" accept map "$f" --all-layers --output=json
        tcase "$n: export of the active image works" export_accept "$f"
        tcase "$n: export --vmstate s1 fails" export_refuse "$f" --vmstate s1
        tcase "$n: export -U --vmstate 1 fails" export_refuse "$f" -U --vmstate 1
        ;;
    *)
        tcase "$n: known kind" false
        ;;
    esac
done <<< "$IMAGES"

# protocol / json: backing names: info warns that it will not follow them
case_protocol_warning() {
    qc info "$1"
    expect_rc 0 || return 1
    expect_stderr_match "^qchain-info: warning: .*$(basename "$1")"
}
for n in backing-nbd backing-nbd-uri backing-json; do
    tcase "$n: info warns about the backing name" case_protocol_warning "$BAD/$n.qcow2"
done

# loops are found through relative names whatever the working directory,
# and when the image is named relative to it
case_loop_relative() {
    cd "$BAD" || return 1
    qc map backing-loop-a.qcow2
    expect_failure map backing-loop-a.qcow2 || return 1
    cd / || return 1
    qc map "${BAD#/}/backing-loop-b.qcow2"
    expect_failure map "${BAD#/}/backing-loop-b.qcow2"
}
tcase "backing loop via relative paths from two directories" case_loop_relative

# a copy of the bad images in a directory with a space and a quote
case_odd_dir() {
    local d="$TESTTMP/dir with space's"
    mkdir -p "$d" && cp "$BAD"/backing-loop-*.qcow2 "$BAD"/data-past-end.qcow2 "$d"/ || return 1
    qc map "$d/backing-loop-a.qcow2"
    expect_failure map "$d/backing-loop-a.qcow2" || return 1
    qc map "$d/data-past-end.qcow2"
    expect_failure map "$d/data-past-end.qcow2"
}
tcase "bad images in a directory named with a space and a quote" case_odd_dir

# a FIFO as the backing file: refused at once, not waited on (open
# blocked until a writer came, forever)
case_backing_fifo() {
    local d=$TESTTMP/fifo
    mkdir -p "$d" && cp "$BAD/backing-fifo.qcow2" "$d/" && mkfifo "$d/backing-fifo.fifo" || return 1
    QC_TIMEOUT=10
    qc map "$d/backing-fifo.qcow2"
    expect_failure map "$d/backing-fifo.qcow2" || return 1
    qc info --backing-chain "$d/backing-fifo.qcow2"
    expect_failure info "$d/backing-fifo.qcow2"
}
tcase "backing file is a FIFO: refused without blocking" case_backing_fifo

# found by fuzz_check: the active L1 table overlaps the header, its
# entries there point past the end of the file; -r all must drop the other
# such references but never rewrite the header (the image stays openable)
case_check_l1_over_header() {
    cd "$(casedir check-l1-over-header)" && cp "$BAD/check-l1-over-header.qcow2" img.qcow2 || return 1
    head -c 48 img.qcow2 > hdr.before  # up to the refcount table fields
    qc check -f qcow2 -r all img.qcow2
    expect_rc 2 || return 1
    head -c 48 img.qcow2 > hdr.after
    expect_same_bytes hdr.before hdr.after || return 1
    qc check -f qcow2 --output=json img.qcow2
    expect_rc 2
}
tcase "check -r all never rewrites the header (L1 over the header)" case_check_l1_over_header

# the generator reproduces the committed files (opt-in: compressed images
# depend on the zlib/zstd and QEMU versions, so other machines may differ)
case_generator_current() {
    $PY "$QCHAIN_IMAGES/make-bad-images.py" --check > "$TESTTMP/gen.log" 2>&1 ||
        { diag "make-bad-images.py --check:"; diag_file "$TESTTMP/gen.log"; return 1; }
}
if [ "${QCHAIN_CHECK_BAD_IMAGES:-0}" = 1 ]; then
    tcase "make-bad-images.py --check: committed images are current" case_generator_current
fi

finish
