#!/usr/bin/env bash
# qchain-snapshot: overlays qemu-img accepts, backed by ACTIVE with its
# format and size, named relative or absolute as documented; all pairs or
# none; refusals (OVERLAY exists, ACTIVE missing or in use) change nothing.
. "$(dirname "$0")/lib.sh"
S=$QCHAIN_BIN/qchain-snapshot

qemu-img create -q -f raw base.raw 64M
qemu-io -f raw -c 'write -P 0x11 0 8M' base.raw >/dev/null

# same directory: relative name, raw format recorded
if "$S" base.raw s1.qcow2 > out 2>err; then
    qemu-img info --output=json s1.qcow2 > i.json
    if [ "$(json_get i.json backing-filename)" = '"base.raw"' ] &&
       [ "$(json_get i.json backing-filename-format)" = '"raw"' ] &&
       [ "$(json_get i.json virtual-size)" = 67108864 ] &&
       [ "$(json_get i.json format-specific data compat)" = '"1.1"' ] &&
       qemu-img check -q s1.qcow2 && grep -q 'base.raw <- s1.qcow2' out; then
        ok "snapshot of a raw image"
    else bad "snapshot of a raw image" "$(cat i.json out)"; fi
else bad "snapshot of a raw image" "$(cat err)"; fi

# the guest keeps running on the overlay
qemu-io -c 'write -P 0x22 4M 1M' s1.qcow2 >/dev/null
qemu-img convert -O raw s1.qcow2 view1.raw
"$QCHAIN_BIN/qchain-export" s1.qcow2 view1q.raw && cmp -s view1.raw view1q.raw \
    && qemu-io -c 'read -P 0x11 0 4M' -c 'read -P 0x22 4M 1M' s1.qcow2 >/dev/null \
    && ok "overlay reads through to its backing file" \
    || bad "overlay content" "differs"

# another directory: absolute by default, relative on request
mkdir -p vm/disks other
"$S" s1.qcow2 other/s2.qcow2 >/dev/null 2>err \
    && qemu-img info --output=json other/s2.qcow2 > i.json \
    && [ "$(json_get i.json backing-filename)" = "\"$PWD/s1.qcow2\"" ] \
    && [ "$(json_get i.json backing-filename-format)" = '"qcow2"' ] \
    && qemu-img compare -q other/s2.qcow2 s1.qcow2 \
    && ok "other directory: absolute backing name" \
    || bad "absolute name" "$(cat err) $(cat i.json)"
"$S" --backing-path=relative s1.qcow2 vm/disks/s3.qcow2 >/dev/null 2>err \
    && qemu-img info --output=json vm/disks/s3.qcow2 > i.json \
    && [ "$(json_get i.json backing-filename)" = '"../../s1.qcow2"' ] \
    && (cd / && qemu-img compare -q "$work/vm/disks/s3.qcow2" "$work/s1.qcow2") \
    && ok "relative name to another directory resolves from anywhere" \
    || bad "relative name" "$(cat err) $(cat i.json)"
"$S" --backing-path=absolute base.raw abs.qcow2 >/dev/null \
    && qemu-img info --output=json abs.qcow2 > i.json \
    && [ "$(json_get i.json backing-filename)" = "\"$PWD/base.raw\"" ] \
    && ok "--backing-path=absolute in one directory" || bad "absolute" "$(cat i.json)"
cp base.raw 'we:ird.raw'
"$S" 'we:ird.raw' weird.qcow2 >/dev/null 2>err \
    && qemu-img info --output=json weird.qcow2 > i.json \
    && [ "$(json_get i.json backing-filename)" = '"./we:ird.raw"' ] \
    && qemu-img compare -q weird.qcow2 base.raw \
    && ok "a name with ':' is stored so that it is not a protocol" \
    || bad "colon name" "$(cat err) $(cat i.json)"

# several disks: all or nothing
qemu-img create -q -f qcow2 d1.qcow2 16M; qemu-img create -q -f qcow2 d2.qcow2 32M
"$S" d1.qcow2:n1.qcow2 d2.qcow2:n2.qcow2 --json > o.json 2>err \
    && [ "$(json_get o.json 1 virtual-size)" = 33554432 ] \
    && qemu-img check -q n1.qcow2 && qemu-img check -q n2.qcow2 \
    && ok "two disks in one call" || bad "two disks" "$(cat err)"
touch taken.qcow2
"$S" d1.qcow2:m1.qcow2 d2.qcow2:taken.qcow2 >/dev/null 2>err; rc=$?
[ $rc -eq 1 ] && [ ! -e m1.qcow2 ] && [ ! -s taken.qcow2 ] \
    && ok "an existing overlay refuses the whole call" || bad "all or nothing" "exit $rc"
"$S" d1.qcow2:m1.qcow2 missing.qcow2:m2.qcow2 >/dev/null 2>err; rc=$?
[ $rc -eq 1 ] && [ ! -e m1.qcow2 ] && [ ! -e m2.qcow2 ] && grep -q "missing.qcow2" err \
    && ok "a missing ACTIVE refuses the whole call" || bad "missing active" "exit $rc $(cat err)"
"$S" s1.qcow2 >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] && ok "usage error exits 2" || bad "usage" "exit $rc"

# in use: a VM writing ACTIVE, and a VM only reading it
qemu-img create -q -f qcow2 busy.qcow2 16M
hold busy.qcow2
"$S" busy.qcow2 b1.qcow2 >/dev/null 2>err; rc=$?
[ $rc -eq 1 ] && [ ! -e b1.qcow2 ] && grep -q "in use" err \
    && ok "refuses an ACTIVE a VM writes" || bad "in use (writer)" "exit $rc $(cat err)"
release
hold -r busy.qcow2
"$S" busy.qcow2 b2.qcow2 >/dev/null 2>err; rc=$?
[ $rc -eq 1 ] && [ ! -e b2.qcow2 ] && ok "refuses an ACTIVE a VM only reads" \
    || bad "in use (reader)" "exit $rc $(cat err)"
release
"$S" busy.qcow2 b3.qcow2 >/dev/null 2>err && qemu-img check -q b3.qcow2 \
    && ok "works once the VM is gone" || bad "after release" "$(cat err)"
finish
