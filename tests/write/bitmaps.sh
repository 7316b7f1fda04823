#!/usr/bin/env bash
# Persistent dirty bitmaps under qchain's writer: an enabled bitmap gets
# exactly the bits of every range written (checked by decoding it), a
# disabled one is left alone, both are consistent (not in use) after a
# clean close and qemu-img check is clean; a writer killed mid-way leaves
# the enabled bitmap flagged in use (inconsistent), never silently stale.
. "$(dirname "$0")/lib.sh"
RW=${RANDWRITE:?}

decode() { # image -> "name flags granularity set-bits..." per bitmap
    python3 - "$1" <<'PY'
import struct, sys
d = open(sys.argv[1], 'rb').read()
hl = struct.unpack('>I', d[100:104])[0]; off = hl; cs = 1 << struct.unpack('>I', d[20:24])[0]
while True:
    t, l = struct.unpack('>II', d[off:off + 8])
    if t == 0x23852875:
        nb, _, ds, do = struct.unpack('>IIQQ', d[off + 8:off + 32])
    if t == 0: break
    off += 8 + ((l + 7) & ~7)
p = do
for _ in range(nb):
    to, ts, fl, ty, gb, nl, ed = struct.unpack('>QIIBBHI', d[p:p + 24])
    name = d[p + 24 + ed:p + 24 + ed + nl].decode()
    bits = []
    for i, e in enumerate(struct.unpack('>%dQ' % ts, d[to:to + 8 * ts])):
        data = e & 0x00fffffffffffe00
        if not data:
            if e & 1: bits.append('all-ones')
            continue
        blk = d[data:data + cs]
        for j, byte in enumerate(blk):
            for k in range(8):
                if byte >> k & 1: bits.append(str(i * cs * 8 + j * 8 + k))
    print(name, fl, gb, ' '.join(bits))
    p += (24 + ed + nl + 7) & ~7
PY
}
expect_bits() { # log granularity-bits
    python3 - "$1" "$2" <<'PY'
import sys
gb = int(sys.argv[2]); s = set()
for line in open(sys.argv[1]):
    o, l = map(int, line.split())
    s.update(range(o >> gb, ((o + l - 1) >> gb) + 1))
print(' '.join(str(b) for b in sorted(s)))
PY
}

for cfg in "4k:16" "64k:16" "64k:9" "2M:20"; do
    cs=${cfg%%:*}; g=${cfg##*:}
    rm -f bm.qcow2 bm.raw
    qemu-img create -q -f qcow2 -o cluster_size=$cs bm.qcow2 64M
    qemu-img bitmap --add -g $((1 << g)) bm.qcow2 on
    qemu-img bitmap --add --disable bm.qcow2 off
    truncate -s 64M bm.raw
    "$RW" bm.qcow2 bm.raw 9 150 --verify --log ops.log >/dev/null 2>err \
        || { bad "bitmaps $cfg" "randwrite: $(cat err)"; continue; }
    decode bm.qcow2 > got
    want=$(expect_bits ops.log $g)
    on=$(awk '$1=="on"' got); off=$(awk '$1=="off" {print $2, NF}' got)
    if [ "$on" != "on 2 $g $want" ]; then
        bad "bitmaps $cfg" "enabled bitmap bits differ from the writes"
    elif [ "$off" != "0 3" ]; then
        bad "bitmaps $cfg" "disabled bitmap changed: $off"
    elif ! qemu-img check -q bm.qcow2; then
        bad "bitmaps $cfg" "qemu-img check"
    elif ! qemu-img compare -q -f qcow2 -F raw bm.qcow2 bm.raw; then
        bad "bitmaps $cfg" "content"
    else
        ok "bitmaps $cfg: enabled bitmap has exactly the written ranges"
    fi
done

# (also after a refcount rebuild at the start, as a resumed commit does:
# the rebuild used to close the writer's state, flagging the bitmap
# consistent while the writes went on)
for first in "" --rebuild-first; do
    rm -f bm.qcow2 bm.raw
    qemu-img create -q -f qcow2 bm.qcow2 64M
    qemu-img bitmap --add bm.qcow2 on
    truncate -s 64M bm.raw
    "$RW" bm.qcow2 bm.raw 5 100000000 $first >/dev/null 2>&1 & pid=$!
    sleep 0.3; kill -KILL $pid; wait $pid 2>/dev/null
    flags=$(decode bm.qcow2 | awk '{print $2}')
    [ "$flags" = 3 ] && qemu-img info bm.qcow2 | grep -q in-use \
        && ok "a killed writer${first:+ ($first)} leaves the bitmap flagged in use" \
        || bad "killed writer${first:+ ($first)}" "flags $flags"
done
finish
