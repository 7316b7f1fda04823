#!/usr/bin/env bash
# Copy offload of qchain-commit into a raw base: on XFS with reflink (a loop
# mount made here) the data lands as shared extents, not copied bytes; on a
# file system without reflinks (ext4) nothing is offloaded (a kernel copy
# is slower there than the library's coalesced writes).  Either way the
# base must read exactly as the guest view did.
#
# Needs root, mkfs.xfs and a loop device for the XFS part; where the machine
# does not allow mounting, that part is skipped with the reason (exit 77
# when nothing could run).
. "$(dirname "$0")/../write/lib.sh"
C=$QCHAIN_BIN/qchain-commit

view() { qemu-img convert -O raw "$1" "$2"; }

# build DIR: raw base (64 MiB of 128 MiB written), qcow2 overlay with 512
# scattered 64 KiB clusters, 64 KiB of 4 KiB writes, zeros, compressed data
build() {
    local d=$1
    qemu-img create -q -f raw "$d/base.raw" 128M
    qemu-io -f raw -c 'write -P 1 0 64M' "$d/base.raw" >/dev/null
    qemu-img create -q -f qcow2 -b base.raw -F raw "$d/top.qcow2"
    python3 -c '
import random
r = random.Random(5)
for i, c in enumerate(r.sample(range(2048), 512)):
    print("write -P %d %d 64k" % (i % 250 + 2, c * 65536))
print("write -P 7 100M 4k")
print("write -z 10M 1M")
print("write -c -P 8 120M 64k")
' > "$d/cmds"
    qemu-io "$d/top.qcow2" < "$d/cmds" >/dev/null
}

# commit_in DIR NAME: commit, compare with the view taken before; prints
# offloaded-bytes and data-bytes
commit_in() {
    local d=$1 n=$2
    view "$d/top.qcow2" "$work/before-$n.raw"
    if ! "$C" --json "$d/top.qcow2" > "$work/c-$n.json" 2>"$work/err"; then
        bad "$n" "commit failed: $(cat "$work/err")"; return 1; fi
    if ! cmp -s "$work/before-$n.raw" "$d/base.raw"; then
        bad "$n" "the base differs from the guest view"; return 1; fi
    return 0
}

# --- the build's own file system: offload only where it shares extents
mkdir -p "$work/local"
build "$work/local"
head -c 65536 /dev/urandom > "$work/local/probe"
if cp --reflink=always "$work/local/probe" "$work/local/probe2" 2>/dev/null; then
    reflinks=yes; else reflinks=no; fi
if commit_in "$work/local" local; then
    off=$(json_get "$work/c-local.json" offloaded-bytes)
    data=$(json_get "$work/c-local.json" data-bytes)
    if [ $reflinks = yes ] && [ "$off" -gt 0 ] && [ "$off" -le "$data" ]; then
        ok "local file system (reflinks): $off of $data data bytes shared, base equals the view"
    elif [ $reflinks = no ] && [ "$off" = 0 ]; then
        ok "local file system (no reflinks): data written by hand ($data bytes), base equals the view"
    else
        bad "local file system" "reflinks $reflinks, offloaded-bytes $off of $data"
    fi
fi

# --- XFS with reflink on a loop mount
why=
if [ "$(id -u)" -ne 0 ]; then why="not root"
elif ! command -v mkfs.xfs >/dev/null; then why="mkfs.xfs missing (package xfsprogs)"
elif ! grep -qw xfs /proc/filesystems && ! modprobe xfs 2>/dev/null; then why="the kernel has no XFS"
fi
mnt=$work/xfs
if [ -z "$why" ]; then
    truncate -s 1G "$work/xfs.img"
    mkdir -p "$mnt"
    if ! mkfs.xfs -q -m reflink=1 "$work/xfs.img" 2>"$work/err"; then
        why="mkfs.xfs failed: $(head -c 200 "$work/err")"
    elif ! mount -o loop "$work/xfs.img" "$mnt" 2>"$work/err"; then
        why="cannot mount a loop device here: $(head -c 200 "$work/err")"
    else
        cleanup_hooks+=("umount '$mnt' 2>/dev/null || umount -l '$mnt' 2>/dev/null")
    fi
fi
if [ -n "$why" ]; then
    echo "# SKIP XFS reflink part: $why"
    finish || exit 1
    [ $cases -gt 0 ] || exit 77
    exit 0
fi

build "$mnt"
used0=$(df -B1 --output=used "$mnt" | tail -1)
if commit_in "$mnt" xfs; then
    used1=$(df -B1 --output=used "$mnt" | tail -1)
    off=$(json_get "$work/c-xfs.json" offloaded-bytes)
    data=$(json_get "$work/c-xfs.json" data-bytes)
    grew=$((used1 - used0))
    # reflinked data takes no new space: the file system grows by far less
    # than the data committed (the compressed cluster, the 4 KiB write's
    # partial block and metadata are written)
    if [ "$off" -le 0 ]; then bad "xfs reflink" "nothing offloaded"
    elif [ $grew -gt $((data / 4)) ]; then
        bad "xfs reflink" "the file system grew by $grew bytes for $data bytes of data (no sharing)"
    elif command -v filefrag >/dev/null && ! filefrag -v "$mnt/base.raw" | grep -q shared; then
        bad "xfs reflink" "no shared extents in the base (filefrag)"
    else
        ok "xfs reflink: $off of $data data bytes shared, not copied (file system grew $grew bytes); base equals the view"
    fi
    # the overlay is still intact and the chain still reads the same
    view "$mnt/top.qcow2" "$work/after-xfs.raw"
    cmp -s "$work/before-xfs.raw" "$work/after-xfs.raw" \
        && qemu-img check -q "$mnt/top.qcow2" \
        && ok "xfs reflink: the committed overlay still reads the same" \
        || bad "xfs reflink" "the overlay changed"
    # writing the overlay afterwards must not change the base (copy on write
    # of shared extents)
    sum=$(md5sum < "$mnt/base.raw")
    qemu-io -c 'write -P 0x99 0 128M' "$mnt/top.qcow2" >/dev/null
    [ "$sum" = "$(md5sum < "$mnt/base.raw")" ] \
        && ok "xfs reflink: rewriting the overlay leaves the base as committed" \
        || bad "xfs reflink" "the base changed when the overlay was written"
fi

# --- qcow2 bases on XFS: whole clusters cloned into new base clusters
# qbuild DIR BASE_OPTS TOP_OPTS: qcow2 base (32 MiB of 64 MiB written, an
# internal snapshot sharing its clusters), overlay with 256 scattered
# 64 KiB writes, 4 KiB writes, zeros, compressed data
qbuild() {
    local d=$1
    mkdir -p "$d"
    qemu-img create -q -f qcow2 -o "$2" "$d/base.qcow2" 64M
    qemu-io -f qcow2 -c 'write -P 1 0 32M' "$d/base.qcow2" >/dev/null
    qemu-img snapshot -c before "$d/base.qcow2"
    qemu-img create -q -f qcow2 -o "$3" -b base.qcow2 -F qcow2 "$d/top.qcow2"
    python3 -c '
import random
r = random.Random(7)
for i, c in enumerate(r.sample(range(1024), 256)):
    print("write -P %d %d 64k" % (i % 250 + 2, c * 65536))
for i in range(16):
    print("write -P 9 %d 4k" % (i * 4 * 1048576 + 8192))
print("write -z 10M 1M")
print("write -c -P 8 60M 64k")
' > "$d/cmds"
    qemu-io "$d/top.qcow2" < "$d/cmds" >/dev/null
}

# qcommit NAME BASE_OPTS TOP_OPTS MIN_SHARED [rewrite]: commit on XFS; the
# base reads as the view did, its snapshot as before, qemu-img check is
# clean, at least MIN_SHARED bytes were shared and the file system grew by
# far less than the data when most was; with "rewrite", writing the
# overlay afterwards leaves the base as it is
qcommit() {
    local n=$1 d=$mnt/$1 min=$4
    qbuild "$d" "$2" "$3"
    qemu-img convert -O raw -l before "$d/base.qcow2" "$work/snap-$n.raw"
    view "$d/top.qcow2" "$work/before-$n.raw"
    local used0 used1
    sync -f "$mnt"; used0=$(df -B1 --output=used "$mnt" | tail -1)
    if ! "$C" --json "$d/top.qcow2" > "$work/c-$n.json" 2>"$work/err"; then
        bad "$n" "commit failed: $(cat "$work/err")"; return; fi
    sync -f "$mnt"; used1=$(df -B1 --output=used "$mnt" | tail -1)
    local off data
    off=$(json_get "$work/c-$n.json" offloaded-bytes)
    data=$(json_get "$work/c-$n.json" data-bytes)
    view "$d/base.qcow2" "$work/after-$n.raw"
    qemu-img convert -O raw -l before "$d/base.qcow2" "$work/snap2-$n.raw"
    if ! cmp -s "$work/before-$n.raw" "$work/after-$n.raw"; then
        bad "$n" "the base differs from the guest view"
    elif ! cmp -s "$work/snap-$n.raw" "$work/snap2-$n.raw"; then
        bad "$n" "the base's internal snapshot changed"
    elif ! qemu-img check -q "$d/base.qcow2"; then
        bad "$n" "qemu-img check of the base: $(qemu-img check "$d/base.qcow2" 2>&1 | head -3)"
    elif [ "$off" -lt "$min" ] || [ "$off" -gt "$data" ]; then
        bad "$n" "offloaded-bytes $off of $data, expected at least $min"
    elif [ "$min" -ge $((8 << 20)) ] && [ $((used1 - used0)) -gt $((data / 4)) ]; then
        bad "$n" "the file system grew by $((used1 - used0)) bytes for $data bytes of data (no sharing)"
    else
        ok "$n: $off of $data data bytes shared (file system grew $((used1 - used0)) bytes); base and its snapshot read as they should, check clean"
    fi
    # the overlay afterwards: its writes must not reach the base
    if [ "${5:-}" = rewrite ]; then
        local sum
        sum=$(md5sum < "$work/after-$n.raw")
        qemu-io -c 'write -P 0x99 0 64M' "$d/top.qcow2" >/dev/null
        view "$d/base.qcow2" "$work/after-$n.raw"
        [ "$sum" = "$(md5sum < "$work/after-$n.raw")" ] \
            && ok "$n: rewriting the overlay leaves the base as committed" \
            || bad "$n" "the base changed when the overlay was written"
    fi
    rm -rf "$d" "$work"/*-"$n".raw
}
# the 256 whole 64 KiB clusters are shared (16 MiB), the rest written
qcommit qcow2-64k cluster_size=64k cluster_size=64k $((16 << 20)) rewrite
# overlay clusters of 128 KiB cover two base clusters each
qcommit qcow2-top128k cluster_size=64k cluster_size=128k $((16 << 20))
# subclusters in the base: whole clusters are shared all the same
qcommit qcow2-extl2 cluster_size=64k,extended_l2=on cluster_size=64k $((16 << 20))
# a 4 KiB-cluster overlay: a base cluster is shared only where the
# overlay holds its 16 clusters back to back (the 64 KiB writes)
qcommit qcow2-top4k cluster_size=64k cluster_size=4k 1
# version 2 base (no zero flag)
qcommit qcow2-v2 cluster_size=64k,compat=0.10 cluster_size=64k $((16 << 20))

# two layers committed at once (clusters of both files shared, each run
# from its own file), and --top: the middle layer alone, the top re-pointed
d=$mnt/two
qbuild "$d" cluster_size=64k cluster_size=64k
qemu-img create -q -f qcow2 -b top.qcow2 -F qcow2 "$d/up.qcow2"
qemu-io -c 'write -P 0x61 1M 8M' -c 'write -P 0x62 40M 64k' "$d/up.qcow2" >/dev/null
view "$d/up.qcow2" "$work/before-two.raw"
cp "$d/base.qcow2" "$work/base0.qcow2"; cp "$d/top.qcow2" "$work/top0.qcow2"
if "$C" --json --base "$d/base.qcow2" "$d/up.qcow2" > "$work/c-two.json" 2>"$work/err" &&
    view "$d/base.qcow2" "$work/after-two.raw" &&
    cmp -s "$work/before-two.raw" "$work/after-two.raw" &&
    qemu-img check -q "$d/base.qcow2" &&
    [ "$(json_get "$work/c-two.json" offloaded-bytes)" -ge $((16 << 20)) ]; then
    ok "two layers into a qcow2 base: $(json_get "$work/c-two.json" offloaded-bytes) bytes shared, base reads as the view, check clean"
else
    bad "two layers" "$(cat "$work/err" "$work/c-two.json")"
fi
rm -f "$d/up.qcow2"; mv "$work/base0.qcow2" "$d/base.qcow2"; mv "$work/top0.qcow2" "$d/top.qcow2"
qemu-img create -q -f qcow2 -b top.qcow2 -F qcow2 "$d/up.qcow2"
qemu-io -c 'write -P 0x61 1M 8M' "$d/up.qcow2" >/dev/null
view "$d/up.qcow2" "$work/before-two.raw"
if "$C" --json --top "$d/top.qcow2" "$d/up.qcow2" > "$work/c-two.json" 2>"$work/err" &&
    view "$d/up.qcow2" "$work/after-two.raw" &&
    cmp -s "$work/before-two.raw" "$work/after-two.raw" &&
    qemu-img check -q "$d/base.qcow2" &&
    [ "$(json_get "$work/c-two.json" offloaded-bytes)" -ge $((16 << 20)) ]; then
    ok "--top: the middle layer shared into the base, the top re-pointed, the view unchanged"
else
    bad "--top" "$(cat "$work/err" "$work/c-two.json")"
fi
finish
