#!/usr/bin/env bash
# QEMU-compatible locking, both ways, with qemu-io and qemu-nbd:
#  - a qchain writer (randwrite, through the library) refuses an image that
#    qemu-io or qemu-nbd holds, read-write or read-only, and a backing file
#    held only by a VM running on another overlay;
#  - qchain readers coexist with QEMU readers, refuse a QEMU writer, and
#    read anything with -U;
#  - while qchain writes an image, qemu-img (without -U) refuses to open it.
. "$(dirname "$0")/lib.sh"
RW=${RANDWRITE:?}
M=$QCHAIN_BIN/qchain-map

nbd_start() { # args...
    qemu-nbd --fork --persistent -k "$work/nbd.sock" --pid-file="$work/nbd.pid" "$@"
    cleanup_hooks+=("kill \$(cat $work/nbd.pid 2>/dev/null) 2>/dev/null")
}
nbd_stop() { kill "$(cat "$work/nbd.pid")"; for _ in $(seq 50); do
    kill -0 "$(cat "$work/nbd.pid")" 2>/dev/null || break; sleep 0.1; done; rm -f "$work/nbd.pid"; }
writer_refused() { # name image
    truncate -s 16M model.raw
    "$RW" "$2" model.raw 1 10 >/dev/null 2>err; rc=$?
    [ $rc -ne 0 ] && grep -q "in use" err && ok "$1" || bad "$1" "exit $rc $(cat err)"
}

qemu-img create -q -f qcow2 img.qcow2 16M
qemu-img create -q -f qcow2 -b img.qcow2 -F qcow2 ovl.qcow2

hold -n img.qcow2 -f qcow2
writer_refused "writer refuses qemu-io read-write" img.qcow2
"$M" img.qcow2 >/dev/null 2>err; rc=$?
[ $rc -eq 1 ] && grep -q "in use" err && ok "reader refuses a qemu-io writer" \
    || bad "reader vs writer" "exit $rc $(cat err)"
"$M" -U img.qcow2 >/dev/null 2>err && ok "-U reads past a qemu-io writer" \
    || bad "-U" "$(cat err)"
release

hold -r img.qcow2 -f qcow2
writer_refused "writer refuses qemu-io read-only (stricter than QEMU)" img.qcow2
"$M" img.qcow2 >/dev/null 2>err && ok "reader coexists with a qemu-io reader" \
    || bad "reader vs reader" "$(cat err)"
release

nbd_start -f qcow2 img.qcow2
writer_refused "writer refuses qemu-nbd read-write" img.qcow2
nbd_stop
nbd_start -r -f qcow2 img.qcow2
writer_refused "writer refuses qemu-nbd read-only" img.qcow2
nbd_stop

# a VM on ovl.qcow2 holds img.qcow2 only as its backing file
nbd_start -f qcow2 ovl.qcow2
writer_refused "writer refuses a backing file a VM reads through an overlay" img.qcow2
"$M" img.qcow2 >/dev/null 2>err && ok "reader coexists with that VM" \
    || bad "reader of the VM's backing file" "$(cat err)"
"$QCHAIN_BIN/qchain-snapshot" img.qcow2 snap.qcow2 >/dev/null 2>err; rc=$?
[ $rc -eq 1 ] && [ ! -e snap.qcow2 ] && ok "snapshot refuses the VM's backing file" \
    || bad "snapshot of a held backing file" "exit $rc"
nbd_stop

# the other way: qchain writing, QEMU must stay out
truncate -s 16M model.raw
rm -f ready
"$RW" img.qcow2 model.raw 3 100000000 --flush-every 20 --ready ready \
    >/dev/null 2>werr &
w=$!; cleanup_hooks+=("kill -9 $w 2>/dev/null")
# until the writer holds the image (a loaded machine takes a while to
# start it): at most 20 s. No QEMU probe meanwhile: a qemu-img that
# holds the image as the writer opens it makes the writer refuse.
for _ in $(seq 200); do
    [ -e ready ] && break
    kill -0 $w 2>/dev/null || break
    sleep 0.1
done
[ -e ready ] && kill -0 $w 2>/dev/null || bad "qchain writer" "not running: $(cat werr)"
qemu-img info img.qcow2 >/dev/null 2>err; rc=$?
[ $rc -ne 0 ] && grep -qi "lock" err && ok "qemu-img info refuses while qchain writes" \
    || bad "qemu-img vs qchain writer" "exit $rc $(cat err)"
qemu-io -c 'write 0 512' img.qcow2 >/dev/null 2>err; rc=$?
grep -qi "lock" err && ok "qemu-io refuses to write while qchain writes" \
    || bad "qemu-io vs qchain writer" "exit $rc $(cat err)"
qemu-img info -U img.qcow2 >/dev/null 2>&1 && ok "qemu-img info -U still reads" \
    || bad "qemu-img -U" "failed"
kill -9 $w; wait $w 2>/dev/null
qemu-img check img.qcow2 >/dev/null 2>&1; rc=$?
[ $rc -eq 0 ] || [ $rc -eq 3 ] && ok "image killed mid-write is not corrupt" \
    || bad "after kill" "check exit $rc"
finish
