#!/usr/bin/env bash
# Randomized writes through libqcow2 (randwrite) into images qemu-img made,
# across cluster sizes, refcount widths, versions, extended L2, with and
# without a backing file and with an internal snapshot taken midway; after
# each run: the guest view equals the model (randwrite --verify and
# `qemu-img compare`), `qemu-img check` finds no errors and no leaks, and
# the snapshot's view (qemu-img convert -l) is unchanged.
set -u
RW=${RANDWRITE:?}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; cd "$work"
fails=0; cases=0
ok() { cases=$((cases+1)); echo "ok - $1"; }
bad() { cases=$((cases+1)); fails=$((fails+1)); echo "not ok - $1: $2"; }

make_img() { # name opts size [backing]
    rm -f "$1.qcow2" "$1.raw"
    if [ -n "${4:-}" ]; then
        qemu-img create -q -f qcow2 -o "$2" -b "$4" -F qcow2 "$1.qcow2" "$3"
        qemu-img convert -O raw "$1.qcow2" "$1.raw"
    else
        qemu-img create -q -f qcow2 -o "$2" "$1.qcow2" "$3"
        truncate -s "$3" "$1.raw"
    fi
}

verify() { # name
    local out
    out=$(qemu-img check "$1.qcow2" 2>&1); rc=$?
    [ $rc -eq 0 ] || { bad "$1" "qemu-img check exit $rc: $(echo "$out" | head -3)"; return 1; }
    qemu-img compare -q -f qcow2 -F raw "$1.qcow2" "$1.raw" \
        || { bad "$1" "qemu-img compare differs from the model"; return 1; }
}

plain() { # name opts size count [backing]
    make_img "$1" "$2" "$3" "${5:-}"
    "$RW" "$1.qcow2" "$1.raw" "$cases" "$4" --verify || { bad "$1" "randwrite"; return; }
    verify "$1" && ok "$1 ($2${5:+, backed})"
}

with_snapshot() { # name opts size [backing]
    make_img "$1" "$2" "$3" "${4:-}"
    "$RW" "$1.qcow2" "$1.raw" 11 250 --verify || { bad "$1" "randwrite 1"; return; }
    qemu-img snapshot -c s1 "$1.qcow2" || { bad "$1" "qemu-img snapshot"; return; }
    cp "$1.raw" "$1.s1.raw"
    "$RW" "$1.qcow2" "$1.raw" 12 250 --verify || { bad "$1" "randwrite 2"; return; }
    verify "$1" || return
    qemu-img convert -l s1 -O raw "$1.qcow2" "$1.s1view.raw"
    cmp -s "$1.s1view.raw" "$1.s1.raw" || { bad "$1" "snapshot view changed"; return; }
    ok "$1 ($2${4:+, backed}, snapshot midway)"
}

qemu-img create -q -f qcow2 -o cluster_size=4096 base.qcow2 8M
qemu-io -c 'write -P 7 0 6M' base.qcow2 >/dev/null

for cs in 512 4096 65536 2097152; do
    sz=8M; [ "$cs" = 2097152 ] && sz=32M
    for rb in 1 16 64; do
        plain "v3-$cs-rc$rb" "cluster_size=$cs,refcount_bits=$rb" $sz 400
    done
    plain "v2-$cs" "cluster_size=$cs,compat=0.10" $sz 400
    plain "v3-$cs-backed" "cluster_size=$cs" 12M 300 base.qcow2
    plain "v2-$cs-backed" "cluster_size=$cs,compat=0.10" 12M 300 base.qcow2
done
for cs in 16384 65536 2097152; do
    plain "xl2-$cs" "cluster_size=$cs,extended_l2=on" 32M 300
    plain "xl2-$cs-backed" "cluster_size=$cs,extended_l2=on" 12M 300 base.qcow2
done
# raw images
qemu-img create -q -f raw r.img 8M; cp r.img r.raw
if "$RW" r.img r.raw 5 300 --verify && cmp -s r.img r.raw; then ok "raw image"
else bad "raw image" "content differs"; fi

# qemu-img cannot snapshot 1-bit refcounts; 2 bits is the narrowest width
for cs in 512 4096 65536; do
    with_snapshot "snap-$cs" "cluster_size=$cs" 8M
    with_snapshot "snap-$cs-backed" "cluster_size=$cs" 8M base.qcow2
    with_snapshot "snap-v2-$cs" "cluster_size=$cs,compat=0.10" 8M
    with_snapshot "snap-$cs-rc2" "cluster_size=$cs,refcount_bits=2" 8M
done
with_snapshot snap-xl2 "cluster_size=65536,extended_l2=on" 8M
with_snapshot snap-xl2-backed "cluster_size=32768,extended_l2=on" 8M base.qcow2

echo "$((cases-fails)) passed, $fails failed"
[ $fails -eq 0 ]
