#!/bin/bash
# compare.sh - qchain-compare against qemu-img compare: the same stdout
# (messages and offsets) and exit code, with and without -s, for images
# that are identical in different formats and cluster sizes, a chain and
# its flattened copy, one differing sector, one differing byte at an odd
# offset, different sizes with a zero and a non-zero tail; errors (a
# missing file: exit 2), an image held by a writer (refused without -U,
# compared with -U), and the JSON report.
. "$(dirname "$0")/lib.sh"
need_qemu
need_python

HOLDER_LOG=$TESTTMP/holder.log
trap 'release; cleanup' EXIT

# same_as_qemu ARGS...: qchain-compare ARGS and qemu-img compare ARGS print
# the same stdout and exit with the same code.
same_as_qemu() {
    local want_rc
    "$QEMU_IMG" compare "$@" > cmp.ref 2> cmp.ref.err
    want_rc=$?
    qc compare "$@"
    cp "$QC_OUT" cmp.out
    expect_rc "$want_rc" || { diag "qemu-img said:"; diag_file cmp.ref; return 1; }
    expect_same_text cmp.ref cmp.out "compare $* (stdout)"
}

# both_ways A B [OPTS]: same_as_qemu for A B and B A, with and without -s.
both_ways() {
    local a=$1 b=$2 rc=0
    shift 2
    same_as_qemu "$@" "$a" "$b" || rc=1
    same_as_qemu "$@" "$b" "$a" || rc=1
    same_as_qemu -s "$@" "$a" "$b" || rc=1
    same_as_qemu -s "$@" "$b" "$a" || rc=1
    return $rc
}

# expect_out TEXT: the last qc stdout is TEXT (one line)
expect_out() {
    printf '%s\n' "$1" > want.out
    cp "$QC_OUT" got.out
    expect_same_text want.out got.out "stdout"
}

# A filled 8 MiB image (lib.sh's write pattern: data, zeros, discards,
# partial clusters) as qcow2, raw, qcow2 with other cluster sizes and
# compressed, and a chain over it with its flattened copy.
mkimgs() {
    mk_q base.qcow2 8M cluster_size=64k &&
        qimg convert -O raw base.qcow2 base.raw &&
        qimg convert -O qcow2 -o cluster_size=4k base.qcow2 c4k.qcow2 &&
        qimg convert -O qcow2 -o cluster_size=2M base.qcow2 c2m.qcow2 &&
        qimg convert -c -O qcow2 base.qcow2 comp.qcow2 &&
        qimg create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 8M &&
        fill2 qcow2 top.qcow2 8388608 65536 &&
        qimg convert -O qcow2 top.qcow2 flat.qcow2 &&
        qimg convert -O raw top.qcow2 flat.raw
}

IMGDIR=$TESTTMP/imgs
( mkdir -p "$IMGDIR" && cd "$IMGDIR" && mkimgs ) > "$TESTTMP/setup.log" 2>&1 ||
    { cat "$TESTTMP/setup.log"; echo "Bail out! image setup failed"; exit 1; }

case_identical() {
    cd "$(casedir identical)" && cp "$IMGDIR"/* . || return 1
    local rc=0 x
    for x in base.raw c4k.qcow2 c2m.qcow2 comp.qcow2; do
        both_ways base.qcow2 "$x" || rc=1
        qc compare base.qcow2 "$x"
        expect_rc 0 && expect_out "Images are identical." || rc=1
    done
    both_ways c4k.qcow2 comp.qcow2 || rc=1
    # an image with itself: every range maps to the same host bytes
    same_as_qemu base.qcow2 base.qcow2 || rc=1
    same_as_qemu -s top.qcow2 top.qcow2 || rc=1
    return $rc
}
tcase "identical content: qcow2/raw, 4k/64k/2M clusters, compressed, itself" case_identical

case_chain_flat() {
    cd "$(casedir chain-flat)" && cp "$IMGDIR"/* . || return 1
    local rc=0
    both_ways top.qcow2 flat.qcow2 || rc=1
    both_ways top.qcow2 flat.raw || rc=1
    qc compare top.qcow2 flat.qcow2
    expect_rc 0 || rc=1
    # the chain differs from its base alone
    both_ways top.qcow2 base.qcow2 || rc=1
    qc compare top.qcow2 base.qcow2
    expect_rc 1 || rc=1
    # -F names the second image's format
    same_as_qemu -f qcow2 -F raw top.qcow2 flat.raw || rc=1
    same_as_qemu -f raw -F raw base.qcow2 base.raw || rc=1
    return $rc
}
tcase "a chain and its flattened copy; -f/-F" case_chain_flat

case_shared_base() {
    cd "$(casedir shared-base)" && cp "$IMGDIR"/base.qcow2 . || return 1
    local rc=0
    # two overlays of one base: the base's ranges are the same host bytes
    # of the same file on both sides (not read); the overlays differ
    qimg create -q -f qcow2 -b base.qcow2 -F qcow2 o1.qcow2 8M &&
        qimg create -q -f qcow2 -b base.qcow2 -F qcow2 o2.qcow2 8M &&
        qio -c "write -P 0x42 $((6 * 1048576 + 4096)) 4096" o2.qcow2 || return 1
    both_ways o1.qcow2 base.qcow2 || rc=1
    both_ways o1.qcow2 o2.qcow2 || rc=1
    qc compare o1.qcow2 o2.qcow2
    expect_rc 1 && expect_out "Content mismatch at offset $((6 * 1048576 + 4096))!" || rc=1
    # an overlay larger than its backing file (zeros past the base's end)
    qimg create -q -f qcow2 -b base.qcow2 -F qcow2 big.qcow2 12M &&
        qimg convert -O raw big.qcow2 big.raw || return 1
    both_ways big.qcow2 big.raw || rc=1
    both_ways big.qcow2 base.qcow2 || rc=1
    qio -c "write -P 0x43 $((10 * 1048576)) 512" big.qcow2 || return 1
    both_ways big.qcow2 base.qcow2 || rc=1
    return $rc
}
tcase "overlays of one base; an overlay larger than its base" case_shared_base

case_one_sector() {
    cd "$(casedir one-sector)" && cp "$IMGDIR"/base.qcow2 "$IMGDIR"/base.raw . || return 1
    local rc=0
    cp base.qcow2 s.qcow2 && qio -c "write -P 0xee 3584 512" s.qcow2 || return 1
    both_ways base.qcow2 s.qcow2 || rc=1
    both_ways base.raw s.qcow2 || rc=1
    qc compare base.raw s.qcow2
    expect_rc 1 && expect_out "Content mismatch at offset 3584!" || rc=1
    # a sector in a range that is unallocated in one image
    cp base.qcow2 h.qcow2 && qio -c "write -P 0xee $((5 * 1048576 + 1024)) 512" h.qcow2 || return 1
    both_ways base.qcow2 h.qcow2 || rc=1
    both_ways base.raw h.qcow2 || rc=1
    return $rc
}
tcase "one differing sector (allocated and unallocated ranges)" case_one_sector

case_one_byte() {
    cd "$(casedir one-byte)" && cp "$IMGDIR"/base.raw "$IMGDIR"/base.qcow2 . || return 1
    local rc=0 off
    for off in 1 70001 $((4 * 1048576 + 777)) $((8 * 1048576 - 1)); do
        cp base.raw b.raw
        printf '\x5a' | dd of=b.raw bs=1 seek="$off" conv=notrunc status=none
        both_ways base.qcow2 b.raw || rc=1
        qimg convert -O qcow2 b.raw b.qcow2 || return 1
        both_ways base.qcow2 b.qcow2 || rc=1
        qc compare base.qcow2 b.qcow2
        expect_rc 1 && expect_out "Content mismatch at offset $((off / 512 * 512))!" || rc=1
    done
    return $rc
}
tcase "one differing byte at an odd offset: the sector's offset, as qemu-img" case_one_byte

case_sizes() {
    cd "$(casedir sizes)" && cp "$IMGDIR"/base.raw "$IMGDIR"/base.qcow2 . || return 1
    local rc=0
    # a zero tail, as a raw hole, as written zeros and as a qcow2
    cp base.raw z.raw && truncate -s 10M z.raw || return 1
    cp base.raw zw.raw && dd if=/dev/zero bs=1M count=2 status=none >> zw.raw || return 1
    qimg convert -O qcow2 z.raw z.qcow2 || return 1
    cp base.qcow2 grown.qcow2 && qimg resize -q grown.qcow2 12M || return 1
    for x in z.raw zw.raw z.qcow2 grown.qcow2; do
        both_ways base.qcow2 "$x" || rc=1
    done
    qc compare base.qcow2 z.raw
    expect_rc 0 || rc=1
    printf 'Warning: Image size mismatch!\nImages are identical.\n' > want.out
    cp "$QC_OUT" got.out
    expect_same_text want.out got.out "stdout" || rc=1
    qc compare -s base.qcow2 z.raw
    expect_rc 1 && expect_out "Strict mode: Image size mismatch!" || rc=1
    # a non-zero tail
    cp z.raw nz.raw && printf '\x01' | dd of=nz.raw bs=1 seek=$((9 * 1048576 + 3)) conv=notrunc status=none
    qimg convert -O qcow2 nz.raw nz.qcow2 || return 1
    both_ways base.qcow2 nz.raw || rc=1
    both_ways nz.qcow2 base.raw || rc=1
    qc compare nz.qcow2 base.raw
    expect_rc 1 || rc=1
    grep -qx "Content mismatch at offset $((9 * 1048576))!" "$QC_OUT" ||
        { diag "stdout:"; diag_file "$QC_OUT"; rc=1; }
    # a difference before the tail is reported first
    cp nz.raw d.raw && printf '\x01' | dd of=d.raw bs=1 seek=513 conv=notrunc status=none
    both_ways base.qcow2 d.raw || rc=1
    return $rc
}
tcase "different sizes: zero and non-zero tails, with and without -s" case_sizes

case_errors() {
    cd "$(casedir errors)" && cp "$IMGDIR"/base.qcow2 . || return 1
    local rc=0
    qc compare base.qcow2 missing.qcow2
    expect_rc 2 && expect_stderr_match "^qchain-compare: 'missing.qcow2': " || rc=1
    qc compare missing.qcow2 base.qcow2
    expect_rc 2 && expect_stderr_match "^qchain-compare: 'missing.qcow2': " || rc=1
    [ -s "$QC_OUT" ] && { diag "stdout on error:"; diag_file "$QC_OUT"; rc=1; }
    "$QEMU_IMG" compare base.qcow2 missing.qcow2 > /dev/null 2>&1
    expect_eq "qemu-img's exit code for a missing file" 2 "$?" || rc=1
    # not an image of the format named
    head -c 4096 /dev/urandom > junk.bin
    qc compare -f qcow2 base.qcow2 -F qcow2 junk.bin
    expect_rc 2 || rc=1
    # usage: exit 2 (qemu-img says 1, which would read as "differ")
    qc compare base.qcow2
    expect_rc 2 || rc=1
    qc compare --bogus base.qcow2 base.qcow2
    expect_rc 2 || rc=1
    qc compare --output=json base.qcow2 base.qcow2 extra
    expect_rc 2 || rc=1
    return $rc
}
tcase "errors: a missing file exits 2 as qemu-img, usage errors 2" case_errors

case_held() {
    cd "$(casedir held)" && cp "$IMGDIR"/base.qcow2 . || return 1
    cp base.qcow2 held.qcow2 || return 1
    hold held.qcow2 || return 1
    local rc=0
    if "$QEMU_IMG" compare base.qcow2 held.qcow2 > /dev/null 2>&1; then
        diag "qemu-img compare succeeded on a held image (no locking?)"; rc=1
    fi
    qc compare base.qcow2 held.qcow2
    expect_rc 2 && expect_stderr_match "^qchain-compare: 'held.qcow2': .*in use" || rc=1
    expect_stderr_match "qemu-io \(pid [0-9]+\)" || rc=1
    # -U: the holder wrote 0x33 at offset 0 (perhaps still in its cache:
    # both see the same file)
    same_as_qemu -U base.qcow2 held.qcow2 || rc=1
    same_as_qemu -U held.qcow2 base.qcow2 || rc=1
    release
    return $rc
}
tcase "an image held by a writer: refused without -U, compared with -U" case_held

case_json() {
    cd "$(casedir json)" && cp "$IMGDIR"/base.qcow2 "$IMGDIR"/base.raw . || return 1
    local rc=0
    cp base.raw z.raw && truncate -s 10M z.raw || return 1
    cp base.raw b.raw && printf '\x5a' | dd of=b.raw bs=1 seek=70001 conv=notrunc status=none
    check_json() {
        local want=$1
        $PY -c '
import json, sys
got = json.load(open(sys.argv[1]))
want = json.loads(sys.argv[2])
if list(got) != ["identical", "first-mismatch", "mismatch", "size1", "size2"] or got != want:
    print("# got  %s\n# want %s" % (json.dumps(got), json.dumps(want)))
    sys.exit(1)
' "$QC_OUT" "$want"
    }
    qc compare --output=json base.qcow2 base.raw
    expect_rc 0 && check_json '{"identical": true, "first-mismatch": null, "mismatch": null, "size1": 8388608, "size2": 8388608}' || rc=1
    qc compare --output=json base.qcow2 b.raw
    expect_rc 1 && check_json '{"identical": false, "first-mismatch": 69632, "mismatch": "content", "size1": 8388608, "size2": 8388608}' || rc=1
    qc compare --output=json base.qcow2 z.raw
    expect_rc 0 && check_json '{"identical": true, "first-mismatch": null, "mismatch": null, "size1": 8388608, "size2": 10485760}' || rc=1
    qc compare --output=json -s base.qcow2 z.raw
    expect_rc 1 && check_json '{"identical": false, "first-mismatch": null, "mismatch": "size", "size1": 8388608, "size2": 10485760}' || rc=1
    return $rc
}
tcase "--output=json: identical, first-mismatch, mismatch, size1, size2" case_json

case_progress() {
    cd "$(casedir progress)" && cp "$IMGDIR"/top.qcow2 "$IMGDIR"/base.qcow2 "$IMGDIR"/flat.raw . || return 1
    local rc=0
    qc compare -p top.qcow2 flat.raw
    expect_rc 0 && expect_out "Images are identical." || rc=1
    expect_stderr_match '\[100%\]' || rc=1
    return $rc
}
tcase "-p: progress on stderr, stdout unchanged" case_progress

finish
