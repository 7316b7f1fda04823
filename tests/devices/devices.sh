#!/usr/bin/env bash
# Images on block devices (LVM volumes; loop devices attached here play
# them), against qemu-img as the oracle:
#   1. a raw base on a device under a qcow2 overlay in a file: info, map,
#      export (from and onto devices) and delta see the device's bytes (st_size is 0 for a device:
#      they used to see an empty image), the commit writes into it, and
#      nothing lands under /dev;
#   2. a raw device smaller than the top: refused before writing, with the
#      size needed, the device byte-identical;
#   3. a qcow2 image qemu-img created on a device: info, map and check equal
#      qemu-img's, an overlay committed into it, qemu-img check clean;
#   4. a qcow2 device too small for a commit: refused with the size needed;
#      the loop device's file enlarged and its size re-read, the same
#      command completes;
#   5. qchain-create and qchain-snapshot onto devices (and refusals when the
#      device is too small);
#   6. every image a device: the journal goes to --state-dir, a commit
#      killed mid-way resumes from it;
#   7. locks: a device a running qemu-io writes is refused for commit.
# Needs root and loop devices; where the machine has none, exit 77 with
# the reason.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../write/lib.sh"
B=$QCHAIN_BIN

if [ "$(id -u)" -ne 0 ]; then echo "skip: needs root for loop devices"; exit 77; fi
if ! command -v losetup >/dev/null; then echo "skip: no losetup"; exit 77; fi
loops=()
detach_all() { local d; for d in "${loops[@]+"${loops[@]}"}"; do losetup -d "$d" 2>/dev/null; done; }
cleanup_hooks+=('detach_all')
# attach FILE: the loop device in $dev.  The files behind the devices live
# in lo/, away from the images: a loop device's file holds the same image
# as the device, and a sibling search beside an image would find it.
mkdir -p "$work/lo"
attach() {
    dev=$(losetup -f --show "$work/lo/$1") || { echo "cannot attach $1"; return 1; }
    loops+=("$dev")
}
truncate -s 1M lo/probe.img
if ! attach probe.img; then echo "skip: this machine cannot attach loop devices"; exit 77; fi
losetup -d "$dev"

view() { qemu-img convert -O raw "$@"; }
same_json() { # name qemu.json qchain.json: the same JSON value
    python3 - "$2" "$3" <<'PY' && ok "$1" || bad "$1" "$(diff "$2" "$3" | head -5)"
import json, sys
sys.exit(0 if json.load(open(sys.argv[1])) == json.load(open(sys.argv[2])) else 1)
PY
}
info_same() { # name image
    qemu-img info --output=json "$2" > q-info.json
    "$B/qchain-info" --output=json "$2" > c-info.json 2>err \
        && python3 "$here/../cli/info_compare.py" q-info.json c-info.json > diff.txt \
        && ok "$1" || bad "$1" "$(cat err diff.txt)"
}
no_state_under_dev() { # name
    local f; f=$(find /dev -maxdepth 2 -name '*.qchain-*' 2>/dev/null | head -1)
    [ -z "$f" ] && ok "$1: no job state under /dev" || bad "$1" "found $f"
}
cd "$work"

# ----------------------------------------------------------------------
# 1. raw base on a device, overlay in a file
head -c $((64 << 20)) /dev/urandom > lo/rb.img
attach rb.img; RB=$dev
qemu-img create -q -f qcow2 -b "$RB" -F raw ov.qcow2
qemu-io -c 'write -P 0x55 1M 1M' -c 'write -z 8M 1M' -c 'write -c -P 0x56 20M 64k' \
        -c 'write -P 0x57 63M 4k' ov.qcow2 >/dev/null
info_same "info of a raw device" "$RB"
"$B/qchain-info" "$RB" | grep -q 'virtual size: 64 MiB (67108864 bytes)' \
    && ok "info of a raw device: its size" || bad "info size" "$("$B/qchain-info" "$RB")"
qemu-img map --output=json ov.qcow2 > q-map.json
"$B/qchain-map" --output=json ov.qcow2 > c-map.json
same_json "map of an overlay over a raw device equals qemu-img map" q-map.json c-map.json
qemu-img map --output=json -f raw "$RB" > q-map.json
"$B/qchain-map" --output=json -f raw "$RB" > c-map.json
same_json "map of the raw device itself" q-map.json c-map.json
view ov.qcow2 want.raw
"$B/qchain-export" ov.qcow2 got.raw 2>err && cmp -s want.raw got.raw \
    && ok "export through a raw device base" || bad "export" "$(cat err)"
"$B/qchain-export" -f raw "$RB" got2.raw 2>err && cmp -s lo/rb.img got2.raw \
    && ok "export of a raw device: its bytes" || bad "export device" "$(cat err)"
"$B/qchain-delta" --json ov.qcow2 > d.json 2>err \
    && [ "$(json_get d.json data-bytes)" = $(((1 << 20) + 2 * 65536)) ] \
    && [ "$(json_get d.json zero-bytes)" = $((1 << 20)) ] \
    && [ "$(json_get d.json base-growth-bytes)" = 0 ] \
    && [ "$(json_get d.json base-required-bytes)" = $((64 << 20)) ] \
    && [ "$(json_get d.json base-fits)" = true ] \
    && ok "delta into a raw device: data, zeros, required = the device, fits" \
    || bad "delta raw device" "$(cat err d.json)"
"$B/qchain-delta" ov.qcow2 | grep -q "The base is a device of 64 MiB; the commit needs 64 MiB (67108864 bytes): it fits." \
    && ok "delta, human: the device sentence" || bad "delta human" "$("$B/qchain-delta" ov.qcow2)"
# nothing may be written to a device: no calibration there, and without a
# commit into it yet, no time
"$B/qchain-delta" ov.qcow2 > d.txt 2>err
[ "$(json_get d.json rate-source)" = '<absent>' ] && [ "$(json_get d.json calibration)" = '<absent>' ] \
    && grep -qx "No time estimate (the base is a device, where nothing may be written): give --rate." d.txt \
    && ok "delta into a device: no calibration, no time yet, --rate asked for" \
    || bad "delta device time" "$(cat err d.json d.txt)"
"$B/qchain-commit" --json ov.qcow2 > c.json 2>err && cmp -s want.raw "$RB" \
    && qemu-img compare -q -f raw -F qcow2 "$RB" ov.qcow2 \
    && [ "$(json_get c.json data-bytes)" = "$(json_get d.json data-bytes)" ] \
    && [ -f "dev-$(basename "$RB").qchain-committed" ] \
    && ok "commit into a raw device: the device holds the view, record beside the overlay" \
    || bad "commit raw device" "$(cat err c.json; ls)"
no_state_under_dev "commit into a raw device"
# after a commit into the device, its record gives the time
"$B/qchain-delta" --json ov.qcow2 > d2.json 2>err \
    && [ "$(json_get d2.json rate-source)" = '"history"' ] \
    && [ "$(json_get d2.json history data-bytes)" = "$(json_get c.json data-bytes)" ] \
    && ok "delta into a device after a commit: the time from that commit" \
    || bad "delta device history" "$(cat err d2.json)"
"$B/qchain-commit" --json ov.qcow2 > c2.json 2>err && [ "$(json_get c2.json already-completed)" = true ] \
    && ok "re-run of the finished commit into a device: already completed" \
    || bad "re-run" "$(cat err c2.json)"

# export onto a device (as qemu-img convert writes one): the device's first
# bytes are the guest view, zeros written where the guest sees zeros (the
# device held random bytes); a device smaller than the view is refused
head -c $((80 << 20)) /dev/urandom > lo/ex.img
attach ex.img; EX=$dev
"$B/qchain-export" ov.qcow2 "$EX" > out 2>err && cmp -n $((64 << 20)) want.raw "$EX" \
    && ok "export onto a device: its first 64 MiB are the guest view" \
    || bad "export onto a device" "$(cat err)"
head -c $((16 << 20)) /dev/urandom > lo/ex2.img
attach ex2.img; EX2=$dev
sum=$(md5sum < "$EX2")
"$B/qchain-export" ov.qcow2 "$EX2" > out 2>err; rc=$?
[ $rc = 1 ] && grep -q "is 16 MiB; the export needs 64 MiB" err && [ "$sum" = "$(md5sum < "$EX2")" ] \
    && ok "export onto a device too small: refused, device unchanged" \
    || bad "export too small" "exit $rc: $(cat err)"

# ----------------------------------------------------------------------
# 2. a raw device smaller than the top
qemu-img create -q -f qcow2 -b "$RB" -F raw big.qcow2 96M
qemu-io -c 'write -P 0x66 70M 1M' -c 'write -P 0x67 0 1M' big.qcow2 >/dev/null
sum=$(md5sum < "$RB")
"$B/qchain-delta" --json big.qcow2 > d.json 2>err \
    && [ "$(json_get d.json base-required-bytes)" = $((96 << 20)) ] \
    && [ "$(json_get d.json base-fits)" = false ] \
    && [ "$(json_get d.json base-grows)" = true ] \
    && ok "delta: a raw device smaller than the top does not fit" \
    || bad "delta too small" "$(cat err d.json)"
"$B/qchain-commit" big.qcow2 > out 2>err; rc=$?
[ $rc = 1 ] && grep -q "'$RB' is 64 MiB; the commit needs 96 MiB (100663296 bytes): extend the volume and run the same command again" err \
    && [ "$sum" = "$(md5sum < "$RB")" ] && ! ls ./*.qchain-commit >/dev/null 2>&1 \
    && ok "commit into a raw device too small: refused (exit 1), the size needed, device unchanged" \
    || bad "raw too small" "exit $rc: $(cat err out)"

# ----------------------------------------------------------------------
# 3. a qcow2 image qemu-img created on a device
truncate -s 32M lo/qd.img
attach qd.img; QD=$dev
qemu-img create -q -f qcow2 "$QD" 256M
qemu-io -c 'write -P 0x11 0 2M' -c 'write -z 4M 1M' "$QD" >/dev/null
info_same "info of a qcow2 device" "$QD"
qemu-img map --output=json "$QD" > q-map.json
"$B/qchain-map" --output=json "$QD" > c-map.json
same_json "map of a qcow2 device" q-map.json c-map.json
qemu-img check --output=json "$QD" > q-chk.json
"$B/qchain-check" --output=json "$QD" > c-chk.json 2>err
python3 - q-chk.json c-chk.json <<'PY' && ok "check of a qcow2 device: qemu-img's keys" || bad "check device" "$(cat err c-chk.json q-chk.json)"
import json, sys
q, c = (json.load(open(f)) for f in sys.argv[1:])
sys.exit(0 if all(c.get(k) == v for k, v in q.items()) else 1)
PY
qemu-img create -q -f qcow2 -b "$QD" -F qcow2 qt.qcow2
qemu-io -c 'write -P 0x21 1M 3M' -c 'write -P 0x22 100M 2M' -c 'write -z 0 64k' qt.qcow2 >/dev/null
view qt.qcow2 want.raw
"$B/qchain-delta" --json qt.qcow2 > d.json
"$B/qchain-commit" qt.qcow2 > out 2>err && qemu-img check -q "$QD" \
    && view "$QD" got.raw && cmp -s want.raw got.raw \
    && qemu-img check --output=json "$QD" > chk.json \
    && [ "$(json_get chk.json image-end-offset)" = "$(json_get d.json base-required-bytes)" ] \
    && ok "commit into a qcow2 device: qemu-img check clean, view kept, image ends where delta said" \
    || bad "commit qcow2 device" "$(cat err; json_get chk.json image-end-offset; json_get d.json base-required-bytes)"
no_state_under_dev "commit into a qcow2 device"

# repairs on a device: a data cluster's refcount poked to 0 (a corruption)
# makes -r all rebuild the refcount structures, which must land after the
# image, inside the device (a file would get them past its end)
off=$(qemu-img map --output=json "$QD" | python3 -c 'import json,sys; print([e for e in json.load(sys.stdin) if e["data"] and e["depth"] == 0][0]["offset"])')
python3 - "$QD" "$off" <<'PY'
import struct, sys
dev, off = sys.argv[1], int(sys.argv[2])
with open(dev, "r+b") as f:
    f.seek(48); rt = struct.unpack(">Q", f.read(8))[0]
    f.seek(rt); rb = struct.unpack(">Q", f.read(8))[0]
    f.seek(rb + (off // 65536) * 2); f.write(b"\0\0")
PY
view "$QD" want.raw
qemu-img check "$QD" > /dev/null 2>&1; [ $? = 2 ] && ok "premise: the poked device is corrupt for qemu-img" \
    || bad "premise" "qemu-img check did not find the corruption"
"$B/qchain-check" -r all --output=json "$QD" > r.json 2>err
qemu-img check --output=json "$QD" > chk.json 2>&1 && view "$QD" got.raw && cmp -s want.raw got.raw \
    && grep -q rebuilt-refcounts r.json \
    && [ "$(json_get chk.json image-end-offset)" -lt $((32 << 20)) ] \
    && ok "check -r all on a device: refcounts rebuilt inside the device, qemu-img check clean, view kept" \
    || bad "repair on device" "$(cat err r.json chk.json)"

# ----------------------------------------------------------------------
# 4. a qcow2 device too small for a commit, then enlarged
truncate -s 8M lo/sd.img
attach sd.img; SD=$dev
qemu-img create -q -f qcow2 "$SD" 64M
qemu-img create -q -f qcow2 -b "$SD" -F qcow2 st.qcow2
qemu-io -c 'write -P 0x33 0 12M' st.qcow2 >/dev/null
view st.qcow2 want.raw
sum=$(md5sum < "$SD")
"$B/qchain-delta" --json st.qcow2 > d.json
need=$(json_get d.json base-required-bytes)
"$B/qchain-commit" st.qcow2 > out 2>err; rc=$?
[ $rc = 1 ] && [ "$(json_get d.json base-fits)" = false ] \
    && grep -q "'$SD' is 8 MiB; the commit needs .* ($need bytes): extend the volume" err \
    && [ "$sum" = "$(md5sum < "$SD")" ] \
    && ok "commit into a qcow2 device too small: refused with the size needed ($need bytes), device unchanged" \
    || bad "qcow2 too small" "exit $rc: $(cat err out)"
truncate -s 16M lo/sd.img && losetup -c "$SD"
"$B/qchain-commit" st.qcow2 > out 2>err && qemu-img check -q "$SD" \
    && view "$SD" got.raw && cmp -s want.raw got.raw \
    && ok "the volume extended (16 MiB), the same command completes" \
    || bad "after extending" "$(cat err)"

# ----------------------------------------------------------------------
# 5. create and snapshot onto devices
head -c $((16 << 20)) /dev/urandom > lo/cd.img
attach cd.img; CD=$dev
"$B/qchain-create" -f qcow2 -o cluster_size=4k "$CD" 1G > out 2>err \
    && qemu-img create -q -f qcow2 -o cluster_size=4k ref.qcow2 1G \
    && qemu-img check -q "$CD" && qemu-img compare -q ref.qcow2 "$CD" \
    && qemu-img info --output=json "$CD" > ci.json && qemu-img info --output=json ref.qcow2 > ri.json \
    && python3 - ci.json ri.json <<'PY' \
    && ok "create a qcow2 image on a device (over random bytes): qemu-img info/check/compare agree" \
    || bad "create on device" "$(cat err out)"
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
for d in (a, b):
    for k in ("filename", "actual-size", "dirty-flag"):
        d.pop(k, None)
sys.exit(0 if a == b else 1)
PY
head -c $((128 << 10)) /dev/urandom > lo/tiny.img
attach tiny.img; TD=$dev
sum=$(md5sum < "$TD")
"$B/qchain-create" -f qcow2 "$TD" 1G > out 2>err; rc=$?
[ $rc = 1 ] && grep -q "the device is 131072 bytes; the new image's metadata needs 262144" err \
    && [ "$sum" = "$(md5sum < "$TD")" ] \
    && ok "create on a device smaller than the metadata: refused, device unchanged" \
    || bad "create too small" "exit $rc: $(cat err)"
"$B/qchain-create" -f raw "$TD" 1M > out 2>err; rc=$?
[ $rc = 1 ] && grep -q "smaller than the image" err && [ "$sum" = "$(md5sum < "$TD")" ] \
    && ok "create a raw image larger than the device: refused" || bad "raw create" "exit $rc: $(cat err)"
"$B/qchain-create" -f raw "$TD" 64K > out 2>err && [ "$sum" = "$(md5sum < "$TD")" ] \
    && ok "create a raw image that fits a device: nothing written (the device is the image)" \
    || bad "raw create fits" "$(cat err)"
touch plain.qcow2
"$B/qchain-create" -f qcow2 plain.qcow2 1M > out 2>err; rc=$?
[ $rc = 1 ] && grep -q "already exists" err && [ ! -s plain.qcow2 ] \
    && ok "an existing file is still never overwritten" || bad "existing file" "exit $rc: $(cat err)"

qemu-img create -q -f qcow2 sbase.qcow2 64M
qemu-io -c 'write -P 0x41 0 1M' sbase.qcow2 >/dev/null
"$B/qchain-snapshot" --json sbase.qcow2 "$CD" > s.json 2>err \
    && qemu-img check -q "$CD" && qemu-img info --output=json "$CD" > si.json \
    && [ "$(json_get si.json backing-filename)" = "\"$work/sbase.qcow2\"" ] \
    && [ "$(json_get si.json virtual-size)" = $((64 << 20)) ] \
    && qemu-img compare -q sbase.qcow2 "$CD" \
    && ok "snapshot onto a device: overlay with the absolute backing name, same view" \
    || bad "snapshot onto device" "$(cat err s.json)"
qemu-io -c 'write -P 0x42 2M 1M' "$CD" >/dev/null
view "$CD" want.raw
"$B/qchain-commit" "$CD" > out 2>err && view sbase.qcow2 got.raw && cmp -s want.raw got.raw \
    && qemu-img check -q sbase.qcow2 \
    && ok "commit of an active image on a device into a base file" || bad "commit from device" "$(cat err)"
sum=$(md5sum < "$TD")
"$B/qchain-snapshot" sbase.qcow2 "$TD" > out 2>err; rc=$?
[ $rc = 1 ] && grep -q "is a device of 128 KiB; the overlay's metadata needs 256 KiB" err \
    && [ "$sum" = "$(md5sum < "$TD")" ] \
    && ok "snapshot onto a device too small: refused, device unchanged" || bad "snapshot too small" "exit $rc: $(cat err)"
# all or none: the second pair fails after the first overlay was written
# over a device (the second device is claimed exclusively by another
# program, which only the write finds); the first gets its old start back
head -c $((4 << 20)) /dev/urandom > lo/rd.img
attach rd.img; RD=$dev
truncate -s 4M lo/rd2.img
attach rd2.img; RD2=$dev
command python3 -c 'import os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY | os.O_EXCL); print("held", flush=True); time.sleep(120)' "$RD2" > held &
claimer=$!; cleanup_hooks+=("kill -9 $claimer 2>/dev/null")
for _ in $(seq 50); do [ -s held ] && break; sleep 0.1; done
sum=$(md5sum < "$RD")
qemu-img create -q -f qcow2 sbase2.qcow2 64M
"$B/qchain-snapshot" sbase.qcow2:"$RD" sbase2.qcow2:"$RD2" > out 2>err; rc=$?
kill -9 $claimer; wait $claimer 2>/dev/null
[ $rc = 1 ] && grep -q "the device is in use" err && [ "$sum" = "$(md5sum < "$RD")" ] \
    && ok "snapshot pairs: a later pair fails, the device overlay is undone" \
    || bad "snapshot rollback" "exit $rc: $(cat err)"

# ----------------------------------------------------------------------
# 6. every image a device: the journal in --state-dir, resumed after a kill
head -c $((48 << 20)) /dev/urandom > lo/ab.img
attach ab.img; AB=$dev
truncate -s 64M lo/at.img
attach at.img; AT=$dev
qemu-img create -q -f qcow2 -b "$AB" -F raw "$AT" 48M
qemu-io -c 'write -P 0x71 0 40M' -c 'write -z 44M 1M' "$AT" >/dev/null
view "$AT" want.raw
mkdir state
"$B/qchain-commit" --state-dir "$work/state" "$AT" > out 2> err &
pid=$!; cleanup_hooks+=("kill -9 $pid 2>/dev/null")
signal_when_exists $pid "$work/state/$(echo "${AB#/}" | tr / -).qchain-commit" KILL
caught=$?
wait $pid 2>/dev/null
jname="state/$(echo "${AB#/}" | tr / -).qchain-commit"
if [ $caught = 0 ] && [ -f "$jname" ]; then
    grep -q "^base device $AB\$" "$jname" && ok "journal of a device base in --state-dir names the device by path" \
        || bad "journal" "$(cat "$jname")"
    "$B/qchain-commit" --state-dir "$work/state" "$AT" > out 2>err \
        && grep -q "Resuming the interrupted commit" out \
        && cmp -s want.raw "$AB" && [ ! -e "$jname" ] \
        && ok "all-device chain: killed commit resumed from --state-dir, the base holds the view" \
        || bad "resume" "$(cat err out)"
else
    # the commit finished before the kill: still check its result
    cmp -s want.raw "$AB" && ok "all-device chain: commit (finished before it could be killed)" \
        || bad "all-device commit" "$(cat err out)"
fi
no_state_under_dev "all-device chain"

# ----------------------------------------------------------------------
# 7. locks: a running qemu-io writing the raw device base
qemu-img create -q -f qcow2 -b "$AB" -F raw lk.qcow2
qemu-io -c 'write -P 0x72 0 64k' lk.qcow2 >/dev/null
hold -n "$AB" -f raw
sum=$(md5sum < "$AB")
# (--state-dir: the record of test 6 says the overlay on $AT was committed
# into $AB; it is no sibling)
"$B/qchain-commit" --state-dir "$work/state" lk.qcow2 > out 2>err; rc=$?
[ $rc = 1 ] && grep -q "in use" err && [ "$sum" = "$(md5sum < "$AB")" ] \
    && ok "commit into a device a running qemu-io holds: refused (locks on the device node)" \
    || bad "locks" "exit $rc: $(cat err)"
"$B/qchain-info" -U -f raw "$AB" > out 2>err && ok "info -U of the held device" || bad "info -U" "$(cat err)"
release
"$B/qchain-commit" --state-dir "$work/state" lk.qcow2 > out 2>err && qemu-img compare -q -f raw -F qcow2 "$AB" lk.qcow2 \
    && ok "the holder gone, the commit into the device runs" || bad "after holder" "$(cat err)"

echo "finished at $(date +%s.%N)"; finish
