#!/bin/bash
# locking.sh - qchain honours QEMU's image locks: while a stopped qemu-io
# holds an image open for writing, qchain-map/-info/-export refuse it
# (exit 1, "in use") and -U reads it anyway; a read-only holder blocks
# nothing; a locked backing file blocks the chain.  Each case starts
#   qemu-io -c "sigraise $(kill -l STOP)" -c 'write -P 0x33 0 512' IMG &
# waits until it has stopped (holding its locks), checks, then sends
# SIGCONT and waits for it.
. "$(dirname "$0")/lib.sh"
need_qemu

HOLDER_LOG=$TESTTMP/holder.log
trap 'release; cleanup' EXIT

mkimgs() {
    qimg create -q -f qcow2 -o cluster_size=4k base.qcow2 1M &&
        "$QEMU_IO" -c "write -P 0x11 0 64k" -c "write -P 0x12 512k 4k" base.qcow2 > /dev/null &&
        qimg create -q -f qcow2 -b base.qcow2 -F qcow2 img.qcow2 1M &&
        "$QEMU_IO" -c "write -P 0x22 64k 4k" img.qcow2 > /dev/null
}

# refused TOOL IMAGE: exit 1, "qchain-TOOL: 'IMAGE': ... in use ..."
refused() {
    local tool=$1 img=$2
    if [ "$tool" = export ]; then
        rm -f out.raw
        qc export "$img" out.raw
    else
        qc "$tool" "$img"
    fi
    expect_failure "$tool" "$img" || return 1
    expect_stderr_match "in use" || return 1
    if [ "$tool" = export ] && [ -e out.raw ]; then diag "out.raw left behind"; return 1; fi
}

case_locked() {
    cd "$(casedir locked)" && mkimgs || return 1
    hold img.qcow2 || return 1
    # sanity: qemu-img itself is refused
    if "$QEMU_IMG" map img.qcow2 > /dev/null 2>&1; then
        diag "qemu-img map succeeded on the held image (no locking?)"; release; return 1
    fi
    local rc=0
    refused map img.qcow2 || rc=1
    refused info img.qcow2 || rc=1
    refused export img.qcow2 || rc=1
    release
    return $rc
}
tcase "image held for writing: map, info, export refuse it (in use)" case_locked

case_force_share() {
    cd "$(casedir force-share)" && mkimgs || return 1
    hold img.qcow2 || return 1
    local rc=0
    "$QEMU_IMG" map -U --output=json img.qcow2 > map.ref 2>/dev/null
    qc map -U --output=json img.qcow2
    expect_rc 0 || rc=1
    cp "$QC_OUT" map.out
    expect_same_text map.ref map.out "map -U while held" || rc=1
    qc map -U img.qcow2; expect_rc 0 || rc=1
    qc info -U img.qcow2; expect_rc 0 || rc=1
    qc info -U --backing-chain img.qcow2; expect_rc 0 || rc=1
    qc export -U img.qcow2 out.raw; expect_rc 0 || rc=1
    "$QEMU_IMG" convert -U -O raw img.qcow2 ref.raw
    expect_same_bytes ref.raw out.raw || rc=1
    release
    return $rc
}
tcase "image held for writing: -U reads it" case_force_share

case_after_release() {
    cd "$(casedir after)" && mkimgs || return 1
    hold img.qcow2 || return 1
    release
    # the holder finished its write and dropped its locks
    qc map img.qcow2
    expect_rc 0 || return 1
    qc export img.qcow2 out.raw
    expect_rc 0 || return 1
    local b
    b=$(od -An -tx1 -N4 out.raw | tr -d ' ')
    expect_eq "first bytes after the holder's write" 33333333 "$b" || return 1
    "$QEMU_IMG" convert -O raw img.qcow2 ref.raw && expect_same_bytes ref.raw out.raw
}
tcase "after SIGCONT: the write landed, map and export work" case_after_release

case_backing_of_held() {
    cd "$(casedir backing)" && mkimgs || return 1
    qimg create -q -f qcow2 -b base.qcow2 -F qcow2 other.qcow2 1M || return 1
    hold img.qcow2 || return 1
    local rc=0
    # base.qcow2 is open read-only by the holder: readers are welcome
    qc map base.qcow2; expect_rc 0 || rc=1
    qc map other.qcow2; expect_rc 0 || rc=1
    qc export base.qcow2 out.raw; expect_rc 0 || rc=1
    "$QEMU_IMG" map base.qcow2 > /dev/null 2>&1 || { diag "qemu-img map base.qcow2 failed (sanity)"; rc=1; }
    release
    return $rc
}
tcase "backing file of a held image: readable without -U" case_backing_of_held

case_held_base() {
    cd "$(casedir held-base)" && mkimgs || return 1
    hold base.qcow2 || return 1
    local rc=0
    # the chain img -> base is blocked by the lock on base
    if "$QEMU_IMG" map img.qcow2 > /dev/null 2>&1; then
        diag "qemu-img map img.qcow2 succeeded (sanity)"; rc=1
    fi
    qc map img.qcow2
    expect_failure map img.qcow2 || rc=1
    expect_stderr_match "in use" || rc=1
    expect_stderr_match "base\.qcow2" || rc=1
    qc map -U img.qcow2; expect_rc 0 || rc=1
    # info without --backing-chain reads img.qcow2 alone
    qc info img.qcow2; expect_rc 0 || rc=1
    qc info --backing-chain img.qcow2
    expect_failure info img.qcow2 || rc=1
    release
    return $rc
}
tcase "backing file held for writing: the chain is refused, -U reads it" case_held_base

case_read_only_holder() {
    cd "$(casedir ro)" && mkimgs || return 1
    hold -r img.qcow2 || return 1
    local rc=0
    qc map img.qcow2; expect_rc 0 || rc=1
    qc info --backing-chain img.qcow2; expect_rc 0 || rc=1
    qc export img.qcow2 out.raw; expect_rc 0 || rc=1
    release
    return $rc
}
tcase "read-only holder: map, info, export work without -U" case_read_only_holder

case_qchain_does_not_block() {
    # qchain holds no lock after it exits, and its read lock while running
    # does not stop qemu-img from reading
    cd "$(casedir noblock)" && mkimgs || return 1
    qc map img.qcow2; expect_rc 0 || return 1
    "$QEMU_IO" -c 'write -P 0x44 0 512' img.qcow2 > /dev/null 2>&1 ||
        { diag "qemu-io could not write after qchain-map"; return 1; }
}
tcase "no lock left behind after qchain-map" case_qchain_does_not_block

finish
