#!/usr/bin/env bash
# outputs.sh BIN OUTDIR IMGDIR - record what every reading command prints
# for a fixed set of images, so that a change meant to keep behaviour (a
# refactoring) can be held to byte-identical outputs:
#
#   scripts/outputs.sh build-before/tools /tmp/before /tmp/images
#   scripts/outputs.sh build-after/tools /tmp/after /tmp/images
#   diff -r /tmp/before /tmp/after
#
# The images are made into IMGDIR the first time and reused after (QEMU's
# compression threads and the clock make every new set a little different).
#
# The images: tests/images/bad/*, the hostile set of make-bound-images.py
# (made here), and a matrix made with qemu-img (raw and qcow2 of several
# cluster sizes, compat 0.10, extended L2, compressed and zero clusters, a
# chain of three, internal snapshots, a bitmap).  For each: qchain-info
# (human, JSON, --backing-chain), qchain-map (human, JSON, --all-layers),
# qchain-check (human, JSON), qchain-delta (JSON, where there is a chain),
# and the md5 of qchain-export (not for the hostile set: some are
# exabytes); stdout, stderr and the exit code of each.
# Writes nothing but OUTDIR and IMGDIR; slow cases are bounded by timeout(1).
set -u
[ $# = 3 ] || { echo "usage: outputs.sh BIN OUTDIR IMGDIR" >&2; exit 2; }
bin=$(cd "$1" && pwd); out=$2
top=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out" "$3"; out=$(cd "$out" && pwd); work=$(cd "$3" && pwd)
cd "$work"
if [ ! -f made ]; then
rm -rf m b x.raw
mkdir m && cd m
qemu-img create -q -f raw raw.img 16M
qemu-io -f raw -c 'write -P 1 0 1M' -c 'write -P 2 8M 64k' raw.img >/dev/null
for o in cluster_size=512 cluster_size=4k,refcount_bits=1 cluster_size=64k \
         cluster_size=2M compat=0.10 cluster_size=32k,extended_l2=on \
         compression_type=zstd; do
    n=q-$(echo "$o" | tr ',=' '__').qcow2
    qemu-img create -q -f qcow2 -o "$o" "$n" 24M
    qemu-io -c 'write -P 3 0 1M' -c 'write -z 2M 1M' -c 'write -c -P 4 4M 64k' \
            -c 'write -P 5 12k 4k' -c 'discard 5M 64k' "$n" >/dev/null 2>&1
done
qemu-img create -q -f qcow2 -b raw.img -F raw mid.qcow2
qemu-io -c 'write -P 6 1M 2M' -c 'write -z 10M 1M' mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 20M
qemu-io -c 'write -P 7 1536k 64k' -c 'write -P 8 18M 1M' top.qcow2 >/dev/null
qemu-img create -q -f qcow2 snaps.qcow2 8M
qemu-io -c 'write -P 9 0 1M' snaps.qcow2 >/dev/null
qemu-img snapshot -c one snaps.qcow2
qemu-io -c 'write -P 10 512k 1M' snaps.qcow2 >/dev/null
qemu-img snapshot -c two snaps.qcow2
qemu-img create -q -f qcow2 bm.qcow2 8M
qemu-img bitmap --add bm.qcow2 b0
qemu-io -c 'write -P 11 0 64k' bm.qcow2 >/dev/null
cd ..
mkdir b && python3 "$top/tests/images/make-bound-images.py" b >/dev/null 2>&1
sync; touch made
fi

run() { # name command...
    local n=$1; shift
    timeout 60 "$@" > "$out/$n.out" 2> "$out/$n.err"
    echo $? > "$out/$n.rc"
    sed -i "s|$work|WORK|g" "$out/$n.out" "$out/$n.err"
}
bounds=$(while read -r n t _; do echo "b/$n/$t"; done < b/cases)
for img in m/*.img m/*.qcow2 $bounds "$top"/tests/images/bad/*; do
    [ -f "$img" ] || continue
    k=$(echo "${img#"$work"/}" | sed "s|$top/tests/images/|img-|; s|/|_|g")
    case $img in /*) ;; *) img=$work/$img ;; esac
    run "$k.info" "$bin/qchain-info" "$img"
    run "$k.info-json" "$bin/qchain-info" --output=json "$img"
    run "$k.info-chain" "$bin/qchain-info" --backing-chain --output=json "$img"
    run "$k.map" "$bin/qchain-map" "$img"
    run "$k.map-json" "$bin/qchain-map" --output=json "$img"
    run "$k.map-all" "$bin/qchain-map" --all-layers --output=json "$img"
    run "$k.check" "$bin/qchain-check" "$img"
    run "$k.check-json" "$bin/qchain-check" --output=json "$img"
    run "$k.delta" "$bin/qchain-delta" --output=json "$img"
    case $img in "$work"/b/*) continue ;; esac # exports of 2^62 bytes
    rm -f x.raw
    run "$k.export" "$bin/qchain-export" "$img" x.raw
    [ -f x.raw ] && md5sum < x.raw > "$out/$k.export.md5"
done
echo "$(ls "$out" | wc -l) files in $out"
