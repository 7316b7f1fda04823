#!/bin/bash
# export_pipe.sh - qchain-export IMAGE - writes the raw content to standard
# output, a pipe included: `qchain-export IMG - | sha256sum` equals
# sha256sum of `qemu-img convert -O raw` for a chain with zero, compressed
# and unallocated clusters, -s SNAPSHOT, --layer 0/1 and --vmstate; no file
# named "-" ever appears; a reader that goes away early (`| head -c 1000`)
# ends the export with an error message and exit 1 (SIGPIPE is ignored so
# that EPIPE is reported), never a hang or a crash; --output=json with "-"
# is a usage error.
. "$(dirname "$0")/lib.sh"
need_qemu
need_python

VMSTATE_IMAGE="$CLI_DIR/vmstate_image.py"

# piped_sum ARGS...: sha256 of what qchain-export ARGS - writes to a pipe
# in pipe.sum; its exit code in PIPE_RC, its stderr in pipe.err.
PIPE_RC=0
piped_sum() {
    timeout -k 5 "$QC_TIMEOUT" "$QCHAIN_BIN/qchain-export" "$@" - \
        2> pipe.err < /dev/null | sha256sum > pipe.sum
    PIPE_RC=${PIPESTATUS[0]}
}

ref_sum() { sha256sum "$1" | awk '{print $1}'; }

# expect_piped REF.raw ARGS...: the piped export of ARGS equals REF.raw,
# exit 0, nothing on stderr, no file "-" made.
expect_piped() {
    local ref=$1 got want
    shift
    piped_sum "$@"
    got=$(awk '{print $1}' pipe.sum)
    want=$(ref_sum "$ref")
    if [ "$PIPE_RC" -ne 0 ] || [ -s pipe.err ]; then
        diag "qchain-export $* - exited $PIPE_RC; stderr:"
        diag_file pipe.err
        return 1
    fi
    if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' pipe.err; then
        diag_file pipe.err; return 1
    fi
    [ -e ./- ] && { diag "a file named '-' appeared"; return 1; }
    expect_eq "sha256 of qchain-export $* - (vs $ref)" "$want" "$got"
}

# A chain: a base with data, zero clusters (write -z), discards and
# compressed clusters, an internal snapshot of it, and an overlay.
mkimgs() {
    mk_q base.qcow2 8M cluster_size=64k &&
        qimg convert -c -O qcow2 base.qcow2 cbase.qcow2 &&
        qio -c "write -z 1M 256k" -c "write -P 0x5e 2M 64k" cbase.qcow2 &&
        qimg snapshot -c snap1 cbase.qcow2 &&
        qio -c "write -P 0x6f 0 128k" -c "write -z 3M 64k" cbase.qcow2 &&
        qimg create -q -f qcow2 -b cbase.qcow2 -F qcow2 top.qcow2 8M &&
        fill2 qcow2 top.qcow2 8388608 65536
}

case_chain() {
    cd "$(casedir chain)" && mkimgs || return 1
    local rc=0
    qimg convert -O raw top.qcow2 ref.raw || return 1
    expect_piped ref.raw top.qcow2 || rc=1
    # the same bytes as the file export writes
    qc export top.qcow2 file.raw
    expect_rc 0 && expect_same_bytes ref.raw file.raw || rc=1
    # the compressed base alone (zero and compressed clusters)
    qimg convert -O raw cbase.qcow2 cref.raw || return 1
    expect_piped cref.raw cbase.qcow2 || rc=1
    # raw input
    expect_piped ref.raw -f raw ref.raw || rc=1
    return $rc
}
tcase "IMAGE -: a chain with zero and compressed clusters, as qemu-img convert" case_chain

case_views() {
    cd "$(casedir views)" && mkimgs || return 1
    local rc=0
    qimg convert -l snap1 -O raw cbase.qcow2 snap.raw || return 1
    expect_piped snap.raw -s snap1 cbase.qcow2 || rc=1
    qimg convert -O raw "json:{\"driver\": \"qcow2\", \"backing\": null, \"file\": {\"driver\": \"file\", \"filename\": \"top.qcow2\"}}" l0.raw || return 1
    expect_piped l0.raw --layer 0 top.qcow2 || rc=1
    qimg convert -O raw cbase.qcow2 l1.raw || return 1
    expect_piped l1.raw --layer 1 top.qcow2 || rc=1
    return $rc
}
tcase "-s SNAPSHOT, --layer 0 and --layer 1 to a pipe" case_views

case_vmstate() {
    cd "$(casedir vmstate)" || return 1
    $PY "$VMSTATE_IMAGE" c64k . > list 2> vm.log || { diag_file vm.log; return 1; }
    [ -s list ] || { diag "vmstate_image.py listed no snapshot"; return 1; }
    local rc=0 snap size off
    while read -r snap size off; do
        expect_piped "c64k.$snap.vmstate" --vmstate "$snap" c64k.qcow2 || rc=1
    done < list
    return $rc
}
tcase "--vmstate SNAPSHOT to a pipe: the VM state QEMU reads back" case_vmstate

case_no_dash_file() {
    cd "$(casedir dash)" && mkimgs || return 1
    local rc=0
    # stdout a regular file: written in order, zeros included
    qimg convert -O raw top.qcow2 ref.raw || return 1
    "$QCHAIN_BIN/qchain-export" top.qcow2 - > out.raw 2> err.txt
    expect_eq "exit code (stdout a file)" 0 "$?" || rc=1
    expect_same_bytes ref.raw out.raw || rc=1
    [ -e ./- ] && { diag "a file named '-' appeared"; rc=1; }
    # a file named "-" that exists is not touched either
    echo keep > ./-
    "$QCHAIN_BIN/qchain-export" top.qcow2 - > out2.raw 2> err.txt
    expect_eq "exit code (a file '-' exists)" 0 "$?" || rc=1
    expect_same_bytes ref.raw out2.raw || rc=1
    expect_eq "the file '-'" keep "$(cat ./-)" || rc=1
    # ./- names the file: refused, as it exists
    qc export top.qcow2 ./-
    expect_failure export ./- || rc=1
    return $rc
}
tcase "no file named '-' is made or touched; ./- is a file name" case_no_dash_file

case_epipe() {
    cd "$(casedir epipe)" && mkimgs || return 1
    local rc=0 n prc
    timeout -k 5 "$QC_TIMEOUT" "$QCHAIN_BIN/qchain-export" top.qcow2 - \
        2> err.txt < /dev/null | head -c 1000 > head.out
    prc=${PIPESTATUS[0]}
    n=$(stat -c %s head.out)
    expect_eq "bytes the reader got" 1000 "$n" || rc=1
    # decided: exit 1 with a message (not death by SIGPIPE, 141; not a
    # timeout, 124)
    expect_eq "exit code of qchain-export" 1 "$prc" || rc=1
    grep -qE "^qchain-export: '-': write failed at offset [0-9]+: Broken pipe$" err.txt ||
        { diag "stderr:"; diag_file err.txt; rc=1; }
    if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' err.txt; then
        diag_file err.txt 40; rc=1
    fi
    # a reader that reads nothing
    timeout -k 5 "$QC_TIMEOUT" "$QCHAIN_BIN/qchain-export" top.qcow2 - \
        2> err2.txt < /dev/null | true
    prc=${PIPESTATUS[0]}
    expect_eq "exit code (reader closed at once)" 1 "$prc" || rc=1
    # a full device
    if [ -w /dev/full ]; then
        "$QCHAIN_BIN/qchain-export" top.qcow2 - > /dev/full 2> err3.txt
        expect_eq "exit code (/dev/full)" 1 "$?" || rc=1
        grep -q "No space left on device" err3.txt || { diag_file err3.txt; rc=1; }
    fi
    return $rc
}
tcase "a reader that goes away: error message and exit 1, no hang, no crash" case_epipe

case_usage() {
    cd "$(casedir usage)" && qimg create -q -f qcow2 img.qcow2 1M || return 1
    local rc=0
    qc export --output=json img.qcow2 -
    expect_rc 2 && expect_stderr_match "output=json" || rc=1
    [ -s "$QC_OUT" ] && { diag "stdout not empty"; rc=1; }
    qc export --json img.qcow2 -
    expect_rc 2 || rc=1
    # an image that cannot be opened: exit 1, nothing on stdout
    qc export missing.qcow2 -
    expect_failure export missing.qcow2 || rc=1
    [ -s "$QC_OUT" ] && { diag "stdout not empty"; rc=1; }
    [ -e ./- ] && { diag "a file named '-' appeared"; rc=1; }
    return $rc
}
tcase "--output=json with '-' is a usage error; a missing image exits 1" case_usage

finish
