#!/usr/bin/env bash
# Images a QEMU left dirty (lazy refcounts, killed mid-write, as iotest 039
# does it): qchain's writer rebuilds their refcounts before writing; after
# random writes qemu-img check is clean (no errors, no leaks), the dirty
# flag is gone, the content equals the model and an internal snapshot's
# view is unchanged.  Also: unknown autoclear bits are cleared by a write
# while unknown compatible bits survive, and the corrupt bit is refused.
. "$(dirname "$0")/lib.sh"
RW=${RANDWRITE:?}

for o in cluster_size=65536 cluster_size=4096,refcount_bits=64 \
         cluster_size=512 cluster_size=65536,extended_l2=on \
         cluster_size=16384,refcount_bits=2; do
    rm -f d.qcow2 d.raw
    qemu-img create -q -f qcow2 -o lazy_refcounts=on,$o d.qcow2 32M
    qemu-io -c 'write -P 1 0 4M' d.qcow2 >/dev/null
    qemu-img snapshot -c s d.qcow2
    qemu-img convert -l s -O raw d.qcow2 snap.raw
    qemu-io -c 'write -P 2 1M 5M' -c 'write -P 3 20M 64k' \
        -c "sigraise $(kill -l KILL)" d.qcow2 >/dev/null 2>&1
    qemu-img check d.qcow2 >/dev/null 2>&1; before=$?
    if [ $before -ne 2 ]; then bad "dirty $o" "setup: check exit $before, not 2"; continue; fi
    qemu-img convert -O raw d.qcow2 d.raw
    if ! "$RW" d.qcow2 d.raw 3 200 --verify >/dev/null 2>err; then
        bad "dirty $o" "randwrite: $(cat err)"; continue; fi
    qemu-img check d.qcow2 >out 2>&1; rc=$?
    qemu-img convert -l s -O raw d.qcow2 snap2.raw
    if [ $rc -ne 0 ]; then bad "dirty $o" "check exit $rc: $(head -3 out)"
    elif qemu-img info d.qcow2 | grep -q "cleanly shut down: no"; then bad "dirty $o" "still dirty"
    elif ! qemu-img compare -q -f qcow2 -F raw d.qcow2 d.raw; then bad "dirty $o" "content"
    elif ! cmp -s snap.raw snap2.raw; then bad "dirty $o" "snapshot view changed"
    else ok "dirty image rebuilt and written ($o)"; fi
done

# header bits: unknown autoclear cleared, unknown compatible kept
qemu-img create -q -f qcow2 b.qcow2 16M; truncate -s 16M b.raw
python3 - <<'PY'
import struct
f = open('b.qcow2', 'r+b')
f.seek(80); f.write(struct.pack('>Q', 1 << 5))   # unknown compatible bit
f.seek(88); f.write(struct.pack('>Q', 1 << 7))   # unknown autoclear bit
PY
"$RW" b.qcow2 b.raw 1 20 >/dev/null
read -r compat auto < <(python3 -c "
import struct; d = open('b.qcow2','rb').read(96)
print(struct.unpack('>Q', d[80:88])[0], struct.unpack('>Q', d[88:96])[0])")
[ "$compat" = 32 ] && [ "$auto" = 0 ] && qemu-img check -q b.qcow2 \
    && ok "unknown autoclear bit cleared, unknown compatible bit kept" \
    || bad "header bits" "compat=$compat autoclear=$auto"

# the corrupt bit: never written
python3 -c "
import struct; f = open('b.qcow2','r+b'); f.seek(72); f.write(struct.pack('>Q', 2))"
sum=$(md5sum < b.qcow2)
"$RW" b.qcow2 b.raw 1 5 >/dev/null 2>err; rc=$?
[ $rc -ne 0 ] && grep -q corrupt err && [ "$(md5sum < b.qcow2)" = "$sum" ] \
    && ok "an image with the corrupt bit is refused and untouched" \
    || bad "corrupt bit" "exit $rc $(cat err)"
finish
