#!/usr/bin/env bash
# qchain-commit against qemu-img as the oracle: the operator's workflow,
# base/top combinations, a grown base, compressed and zero clusters,
# internal snapshots and bitmaps in the base, the refusals, and a crash
# test (SIGKILL at random moments, then re-run to completion).
. "$(dirname "$0")/../write/lib.sh"
C=$QCHAIN_BIN/qchain-commit
S=$QCHAIN_BIN/qchain-snapshot

view() { qemu-img convert -O raw "$1" "$2"; }
clean() { # image: qemu-img check exit 0 (raw: nothing to check)
    [ "$(qemu-img info --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["format"])')" = raw ] \
        || qemu-img check -q "$1"
}

# --- the operator's workflow: raw <- s1 <- s2
qemu-img create -q -f raw base.raw 256M
qemu-io -f raw -c 'write -P 0x11 0 128M' base.raw >/dev/null
"$S" base.raw s1.qcow2 >/dev/null
qemu-io -c 'write -P 0x22 32M 16M' -c 'write -z 64M 8M' -c 'write -P 0x23 250M 1M' s1.qcow2 >/dev/null
"$S" s1.qcow2 s2.qcow2 >/dev/null
qemu-io -c 'write -P 0x33 40M 4M' -c 'write -P 0x44 200M 1M' s2.qcow2 >/dev/null
view s2.qcow2 before.raw
"$C" --top s1.qcow2 --base base.raw --json s2.qcow2 > j1.json 2>err \
    && view s2.qcow2 v1.raw && cmp -s before.raw v1.raw \
    && [ "$(json_get j1.json rebased)" = '"s2.qcow2"' ] \
    && [ "$(json_get j1.json data-bytes)" = $((17 << 20)) ] \
    && [ "$(json_get j1.json zero-bytes)" = $((8 << 20)) ] \
    && [ "$(json_get j1.json unreferenced)" = '["s1.qcow2"]' ] \
    && qemu-img info --output=json s2.qcow2 > i.json \
    && [ "$(json_get i.json backing-filename)" = '"base.raw"' ] \
    && [ "$(json_get i.json backing-filename-format)" = '"raw"' ] \
    && clean s2.qcow2 && [ ! -e base.raw.qchain-commit ] \
    && ok "workflow: s1 into raw, s2 re-pointed, view unchanged" \
    || bad "workflow step 1" "$(cat err j1.json 2>/dev/null)"
"$C" --json s2.qcow2 > j2.json 2>err && cmp -s before.raw base.raw \
    && [ "$(json_get j2.json rebased)" = null ] \
    && ok "workflow: s2 into raw, the base holds the guest's view" \
    || bad "workflow step 2" "$(cat err)"

# re-running a finished job says so and changes nothing
sums=$(md5sum base.raw s2.qcow2)
keys() { python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))))' "$1"; }
"$C" --json s2.qcow2 > j3.json 2>err && [ "$(json_get j3.json already-completed)" = true ] \
    && [ "$(json_get j2.json already-completed)" = false ] \
    && [ "$(keys j3.json)" = "$(keys j2.json)" ] \
    && [ "$(json_get j3.json data-bytes)" = 0 ] \
    && [ "$(json_get j3.json unreferenced)" = '["s2.qcow2"]' ] \
    && [ "$sums" = "$(md5sum base.raw s2.qcow2)" ] \
    && ok "re-run of a finished TOP=ACTIVE job: already completed, same keys as a commit" \
    || bad "finished job" "$(cat err j3.json)"
"$C" --top s1.qcow2 --base base.raw s2.qcow2 > out 2>err && grep -q "already completed" out \
    && "$C" --json --top s1.qcow2 --base base.raw s2.qcow2 > j5.json 2>err \
    && [ "$(keys j5.json)" = "$(keys j1.json)" ] \
    && [ "$(json_get j5.json rebased)" = '"s2.qcow2"' ] \
    && [ "$(json_get j5.json already-completed)" = true ] \
    && ok "re-run of a finished job whose TOP left the chain: already completed, same keys" \
    || bad "finished job (re-pointed)" "$(cat err out j5.json)"
qemu-io -c 'write -P 0x55 0 64k' s2.qcow2 >/dev/null
"$C" --json s2.qcow2 > j4.json 2>err && [ "$(json_get j4.json already-completed)" = false ] \
    && [ "$(json_get j4.json data-bytes)" != 0 ] \
    && ok "a layer written since is committed again" || bad "changed layer" "$(cat err)"

# --- base/top combinations (qcow2 bases of every kind, varied tops)
combo() { # name base-opts top-opts [grow]
    local n=$1 bo=$2 to=$3 bsz=48M tsz=48M
    [ -n "${4:-}" ] && tsz=80M
    rm -f c-*.qcow2 c-*.raw
    qemu-img create -q -f qcow2 -o "$bo" c-base.qcow2 $bsz
    qemu-io -c 'write -P 0x11 0 20M' -c 'write -P 0x12 40M 1M' c-base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o "$to" -b c-base.qcow2 -F qcow2 c-mid.qcow2 $tsz
    qemu-io -c 'write -P 0x21 1M 3M' -c 'write -z 8M 2M' -c 'write -P 0x22 30M 64k' \
            -c 'write -c -P 0x23 12M 256k' -c 'write -P 0x24 4k 4k' c-mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b c-mid.qcow2 -F qcow2 c-top.qcow2 $tsz
    qemu-io -c 'write -P 0x31 2M 512k' -c 'write -z 12M 64k' -c 'write -P 0x32 44M 4M' \
            c-top.qcow2 >/dev/null
    [ -n "${4:-}" ] && qemu-io -c 'write -P 0x33 70M 2M' c-top.qcow2 >/dev/null
    view c-top.qcow2 c-before.raw
    if ! "$C" --top c-top.qcow2 --base c-base.qcow2 c-top.qcow2 >/dev/null 2>err; then
        bad "commit $n" "$(cat err)"; return; fi
    view c-base.qcow2 c-after.raw
    if ! cmp -s c-before.raw c-after.raw; then bad "commit $n" "base differs from the view"
    elif ! qemu-img check -q c-base.qcow2; then bad "commit $n" "qemu-img check of the base"
    else ok "commit $n ($bo <- $to)"; fi
}
combo default cluster_size=64k cluster_size=64k
combo c512 cluster_size=512 cluster_size=64k
combo c4k-rc1 cluster_size=4k,refcount_bits=1 cluster_size=16k
combo c2m cluster_size=2M cluster_size=4k
combo rc64 cluster_size=16k,refcount_bits=64 cluster_size=2M
combo v2 compat=0.10 cluster_size=4k
combo v2-top cluster_size=64k compat=0.10
combo xl2-base extended_l2=on,cluster_size=32k cluster_size=64k
combo xl2-top cluster_size=64k extended_l2=on
combo zstd-top cluster_size=64k compression_type=zstd
combo grown cluster_size=64k cluster_size=64k grow
combo grown-v2 compat=0.10,cluster_size=4k cluster_size=64k grow

# raw base: clusters QEMU filled from the base (copy on write) come back
# mostly unchanged; only the blocks that differ may be written, down to a
# 512-byte write inside one block, a write of the base's own bytes, and
# zeros written over a hole
rm -f w.raw w.qcow2; qemu-img create -q -f raw w.raw 64M
qemu-io -f raw -c 'write -P 0x41 0 32M' -c 'write -P 0x42 40M 1M' w.raw >/dev/null
qemu-img create -q -f qcow2 -b w.raw -F raw w.qcow2
qemu-io -c 'write -P 0x51 4k 4k' -c 'write -P 0x52 1000 512' -c 'write -P 0x53 1M 512' \
        -c 'write -P 0x41 2M 64k' -c 'write -P 0x54 40M 4k' -c 'write -z 48M 128k' \
        -c 'write -P 0 50M 64k' -c 'write -P 0x55 31M 2M' -c 'write -P 0x56 63M 1M' \
        w.qcow2 >/dev/null
view w.qcow2 w-before.raw
"$C" w.qcow2 >/dev/null 2>err && cmp -s w-before.raw w.raw \
    && ok "raw base: copy-on-write clusters committed block by block" \
    || bad "raw base, copy on write" "$(cat err; cmp w-before.raw w.raw)"

# raw base grown by a larger top
rm -f g.raw g.qcow2; qemu-img create -q -f raw g.raw 8M
qemu-io -f raw -c 'write -P 1 0 8M' g.raw >/dev/null
qemu-img create -q -f qcow2 -b g.raw -F raw g.qcow2 24M
qemu-io -c 'write -P 2 6M 4M' -c 'write -z 1M 1M' g.qcow2 >/dev/null
view g.qcow2 g-before.raw
"$C" g.qcow2 >/dev/null 2>err && cmp -s g-before.raw g.raw \
    && [ "$(stat -c %s g.raw)" = $((24 << 20)) ] \
    && ok "raw base grown to the top's size" || bad "raw grown" "$(cat err)"

# internal snapshot and bitmaps in a qcow2 base
rm -f sb.qcow2 so.qcow2
qemu-img create -q -f qcow2 sb.qcow2 32M
qemu-io -c 'write -P 5 0 8M' sb.qcow2 >/dev/null
qemu-img snapshot -c keep sb.qcow2
qemu-img bitmap --add sb.qcow2 track
qemu-img convert -l keep -O raw sb.qcow2 snap-before.raw
qemu-img create -q -f qcow2 -b sb.qcow2 -F qcow2 so.qcow2
qemu-io -c 'write -P 6 1M 2M' -c 'write -z 4M 1M' so.qcow2 >/dev/null
view so.qcow2 so-before.raw
"$C" so.qcow2 >/dev/null 2>err
qemu-img convert -l keep -O raw sb.qcow2 snap-after.raw
if ! view sb.qcow2 sb-after.raw || ! cmp -s so-before.raw sb-after.raw; then bad "snapshot base" "view $(cat err)"
elif ! cmp -s snap-before.raw snap-after.raw; then bad "snapshot base" "snapshot view changed"
elif ! qemu-img check -q sb.qcow2; then bad "snapshot base" "check"
elif qemu-img info sb.qcow2 | grep -q in-use; then bad "snapshot base" "bitmap left in use"
else ok "qcow2 base with an internal snapshot and a bitmap"; fi

# --- refusals change nothing
refuse() { # name expect-exit args...
    local n=$1 want=$2; shift 2
    local sums; sums=$(md5sum r-*.qcow2 r-base.raw 2>/dev/null)
    "$C" "$@" >/dev/null 2>err; rc=$?
    if [ $rc -ne "$want" ]; then bad "refuse $n" "exit $rc: $(cat err)"
    elif [ "$sums" != "$(md5sum r-*.qcow2 r-base.raw 2>/dev/null)" ]; then bad "refuse $n" "files changed"
    elif ! grep -q "^qchain-commit: " err; then bad "refuse $n" "message: $(cat err)"
    else ok "refuse: $n"; fi
}
rm -f r-*; qemu-img create -q -f raw r-base.raw 16M
qemu-img create -q -f qcow2 -b r-base.raw -F raw r-mid.qcow2
qemu-img create -q -f qcow2 -b r-mid.qcow2 -F qcow2 r-top.qcow2
qemu-io -c 'write -P 1 0 1M' r-mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 r-lone.qcow2 16M
refuse "no backing file" 1 r-lone.qcow2
refuse "missing ACTIVE" 1 r-missing.qcow2
refuse "BASE not in the chain" 1 --base r-lone.qcow2 r-top.qcow2
grep -q "'r-lone.qcow2': is not in the backing chain of 'r-top.qcow2'" err \
    || bad "BASE not in the chain" "message: $(cat err)"
refuse "TOP not in the chain" 1 --top r-lone.qcow2 r-top.qcow2
refuse "BASE that does not exist" 1 --base r-nope.raw r-top.qcow2
grep -qx "qchain-commit: 'r-nope.raw': No such file or directory" err \
    || bad "BASE missing" "message: $(cat err)"
refuse "TOP that does not exist" 1 --top r-nope.qcow2 r-top.qcow2
grep -qx "qchain-commit: 'r-nope.qcow2': No such file or directory" err \
    || bad "TOP missing" "message: $(cat err)"
refuse "TOP below BASE" 1 --top r-base.raw --base r-mid.qcow2 r-top.qcow2
grep -q "are TOP and BASE swapped" err && grep -qx "  chain: r-base.raw <- r-mid.qcow2 <- r-top.qcow2" err \
    || bad "swapped" "message: $(cat err)"
refuse "TOP equals BASE" 1 --top r-mid.qcow2 --base r-mid.qcow2 r-top.qcow2
chmod 444 r-base.raw
refuse "read-only BASE (mode bits, even for root)" 1 r-mid.qcow2
grep -q "'r-base.raw': is read-only (mode 0444)" err || bad "read-only" "message: $(cat err)"
chmod 644 r-base.raw
if chattr +i r-base.raw 2>/dev/null; then
    refuse "immutable BASE" 1 r-mid.qcow2
    grep -q "'r-base.raw': is immutable (chattr +i)" err || bad "immutable" "message: $(cat err)"
    chattr -i r-base.raw
else
    echo "# immutable BASE not tried: this file system has no chattr +i"
fi
refuse "usage" 2 --bogus r-top.qcow2
qemu-img create -q -f qcow2 -b r-base.raw -F raw r-clone.qcow2
refuse "a sibling uses BASE" 1 --top r-mid.qcow2 r-top.qcow2
rm -f r-clone.qcow2
hold -n r-base.raw -f raw
refuse "BASE held by a VM (even read-only)" 1 --top r-mid.qcow2 r-top.qcow2
grep -q "^qchain-commit: 'r-base.raw': .*in use.*; held by qemu-io (pid $HOLDER): stop the VM" err \
    || bad "BASE held: the holder named" "$(cat err)"
release
hold -n r-top.qcow2
refuse "ACTIVE written by a VM" 1 --top r-mid.qcow2 r-top.qcow2
grep -q "^qchain-commit: 'r-top.qcow2': .*in use.*; held by qemu-io (pid $HOLDER): stop the VM" err \
    || bad "ACTIVE held: the image in use and its holder named" "$(cat err)"
"$QCHAIN_BIN/qchain-delta" r-top.qcow2 >/dev/null 2>err; rc=$?
[ $rc -eq 1 ] && grep -q "^qchain-delta: 'r-top.qcow2': .*held by qemu-io (pid $HOLDER): stop the VM, or use -U for read-only figures" err \
    && "$QCHAIN_BIN/qchain-delta" -U r-top.qcow2 >/dev/null 2>&1 \
    && ok "delta of an image a VM writes: the holder named, -U advised (and works)" \
    || bad "delta held" "rc=$rc $(cat err)"
release
# a layer renamed away (and another file put under its name) between the
# chain's read and its lock: the identity check refuses; strace holds the
# second open of r-mid.qcow2 (the lock's) for a second
if command -v strace >/dev/null; then
    sums=$(md5sum r-base.raw)
    # LeakSanitizer cannot run under ptrace (an ASan build aborts)
    ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" strace -f -qq -o /dev/null -P r-mid.qcow2 -e trace=openat \
        -e inject=openat:delay_enter=1000000:when=2 \
        "$C" --top r-mid.qcow2 r-top.qcow2 >/dev/null 2>err &
    pid=$!
    sleep 0.5; mv r-mid.qcow2 r-mid.old; cp r-mid.old r-mid.qcow2
    wait $pid; rc=$?
    [ $rc -eq 1 ] && grep -q "^qchain-commit: 'r-mid.qcow2': was replaced by another file while the chain was read" err \
        && [ "$sums" = "$(md5sum r-base.raw)" ] && [ ! -e r-base.raw.qchain-commit ] \
        && ok "refuse: a layer replaced between the chain's read and its lock" \
        || bad "identity check" "rc=$rc $(cat err)"
    mv r-mid.old r-mid.qcow2
fi
printf 'qchain-commit journal 1\nuuid 00000000-0000-0000-0000-000000000001\nactive 1:1 x\ntop 1:2 y\nbase 1:3 z\n' > r-base.raw.qchain-commit
refuse "another job's journal" 1 --top r-mid.qcow2 r-top.qcow2
rm -f r-base.raw.qchain-commit
qemu-img create -q -f qcow2 -b r-base.raw -F raw r-clone.qcow2
echo stale > r-base.raw.qchain-commit.tmp
"$C" --force --top r-mid.qcow2 r-top.qcow2 >/dev/null 2>err \
    && [ ! -e r-base.raw.qchain-commit ] && [ ! -e r-base.raw.qchain-commit.tmp ] \
    && ok "--force commits despite a sibling (a killed run's journal temp file replaced)" \
    || bad "--force" "$(cat err)"

# --- killed at random moments, then run again to completion
# The copy starts once the journal exists and takes 0.1 s or more; each kill
# lands 0 to 80 ms after that, and at least 3 of each format's kills must
# catch the job unfinished (its journal still there), or the test proves
# nothing.
crash() { # base-format base-opts
    local fmt=$1 bo=$2 k kills=${KILLS:-10} rc caught=0
    for k in $(seq 1 "$kills"); do
        rm -f k-* k-base.*
        if [ "$fmt" = raw ]; then
            qemu-img create -q -f raw k-base.img 256M
        else
            qemu-img create -q -f qcow2 -o "$bo" k-base.img 256M
        fi
        qemu-io -f "$fmt" -c 'write -P 1 0 32M' k-base.img >/dev/null
        qemu-img create -q -f qcow2 -b k-base.img -F "$fmt" k-top.qcow2
        qemu-io -c 'write -P 2 4M 80M' -c 'write -z 100M 16M' -c 'write -P 3 150M 32M' \
            k-top.qcow2 >/dev/null
        view k-top.qcow2 k-before.raw
        "$C" k-top.qcow2 >/dev/null 2>&1 &
        pid=$!
        # at a random moment of the copy: it starts with the journal and
        # takes 0.1 s or more here (a kill at a random moment from the
        # start missed it too often on a loaded machine: 1 of 10)
        signal_when_exists $pid k-base.img.qchain-commit KILL 80 \
            || kill -KILL $pid 2>/dev/null
        wait $pid 2>/dev/null
        [ -e k-base.img.qchain-commit ] && caught=$((caught + 1))
        if ! qemu-img compare -q -f raw -F qcow2 k-before.raw k-top.qcow2; then
            bad "crash $fmt $k" "guest view changed after the kill"; continue; fi
        if [ "$fmt" = qcow2 ]; then
            qemu-img check k-base.img >/dev/null 2>&1; rc=$?
            if [ $rc -ne 0 ] && [ $rc -ne 3 ]; then
                bad "crash $fmt $k" "base corrupt after the kill (check $rc)"; continue; fi
        fi
        if ! "$C" k-top.qcow2 >out 2>err; then
            bad "crash $fmt $k" "re-run failed: $(cat err)"; continue; fi
        if ! qemu-img compare -q -f raw -F "$fmt" k-before.raw k-base.img; then
            bad "crash $fmt $k" "base differs after the re-run"
        elif ! clean k-base.img; then bad "crash $fmt $k" "leaks or errors after the re-run"
        elif [ -e k-base.img.qchain-commit ]; then bad "crash $fmt $k" "journal left behind"
        else ok "crash $fmt $k: view intact, re-run completed$(grep -q Resuming out && echo ' (resumed)')"; fi
    done
    [ "$caught" -ge 3 ] || [ "$kills" -lt 10 ] \
        && ok "crash $fmt${bo:+ $bo}: $caught of $kills kills interrupted the job" \
        || bad "crash $fmt${bo:+ $bo}" "only $caught of $kills kills interrupted the job"
}
# --- the image to re-point keeps its persistent bitmaps consistent while the
# copy runs: it is opened as an image only for the re-point, so a job killed
# in the copy leaves the active image's bitmaps as they were (opened
# read-write for the whole copy, they were flagged in use until the end)
rm -f b-*
qemu-img create -q -f raw b-base.img 64M
qemu-img create -q -f qcow2 -b b-base.img -F raw b-s1.qcow2
qemu-io -c 'write -P 5 0 48M' b-s1.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b b-s1.qcow2 -F qcow2 b-active.qcow2
qemu-img bitmap --add b-active.qcow2 backup0
view b-active.qcow2 b-before.raw
bitmap_flags() { qemu-img info -U --output=json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(" ".join(",".join(b["flags"]) for b in d["format-specific"]["data"].get("bitmaps", [])))'; }
"$C" --top b-s1.qcow2 b-active.qcow2 >/dev/null 2>&1 &
pid=$!
signal_when_exists $pid b-base.img.qchain-commit STOP || kill -STOP $pid 2>/dev/null
during=$(bitmap_flags b-active.qcow2)
kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
after=$(bitmap_flags b-active.qcow2)
[ "$during" = auto ] && [ "$after" = auto ] \
    && ok "re-point target's bitmap consistent during the copy and after a kill" \
    || bad "re-point bitmaps" "flags during the copy '$during', after the kill '$after' (want auto)"
if "$C" --top b-s1.qcow2 b-active.qcow2 >out 2>err \
    && qemu-img compare -q -f raw -F qcow2 b-before.raw b-active.qcow2 \
    && [ "$(bitmap_flags b-active.qcow2)" = auto ] \
    && qemu-img info -U --output=json b-active.qcow2 >b-info.json \
    && [ "$(json_get b-info.json backing-filename)" = '"b-base.img"' ]; then
    ok "the killed --top job re-run: re-pointed, view intact, bitmap consistent"
else
    bad "re-point bitmaps re-run" "$(cat err)"
fi

# --- a header the re-point cannot change crash-safely (no backing format
# extension, and an unknown extension that fills sector 0): refused before
# anything is written, instead of rewriting the first cluster at once
rm -f f-*
qemu-img create -q -f raw f-base.img 16M
qemu-img create -q -f qcow2 -b f-base.img -F raw f-s1.qcow2
qemu-io -c 'write -P 7 0 1M' f-s1.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b f-s1.qcow2 -F qcow2 f-act.qcow2
python3 - f-act.qcow2 <<'PY'
import struct, sys
p = sys.argv[1]
d = bytearray(open(p, 'rb').read())
hl = struct.unpack('>I', d[100:104])[0]
off, exts = hl, [struct.pack('>II', 0x7c0ffee7, 400) + bytes(range(200)) * 2]
while True:
    t, l = struct.unpack('>II', d[off:off + 8])
    if t == 0:
        break
    if t != 0xe2792aca:
        exts.append(bytes(d[off:off + 8 + ((l + 7) & ~7)]))
    off += 8 + ((l + 7) & ~7)
bo, bl = struct.unpack('>QI', d[8:20])
name = bytes(d[bo:bo + bl])
out = b''.join(exts) + bytes(8)
d[hl:4096] = bytes(4096 - hl)
d[hl:hl + len(out)] = out
d[hl + len(out):hl + len(out) + bl] = name
d[8:20] = struct.pack('>QI', hl + len(out), bl)
open(p, 'wb').write(d)
PY
md5_before=$(md5sum f-base.img f-s1.qcow2 f-act.qcow2)
"$C" --top f-s1.qcow2 f-act.qcow2 >out 2>err; rc=$?
[ $rc -eq 1 ] && grep -q "cannot be re-pointed" err && grep -q "no room" err \
    && [ "$md5_before" = "$(md5sum f-base.img f-s1.qcow2 f-act.qcow2)" ] \
    && [ ! -e f-base.img.qchain-commit ] && qemu-img check -q f-act.qcow2 \
    && ok "a header without room for a crash-safe re-point: refused, nothing written" \
    || bad "re-point refusal" "rc=$rc $(cat err)"

# --- SIGINT/SIGTERM at random moments of the copy: stopped at a safe point,
# "interrupted; run the same command again" with the command, exit 130/143;
# the view intact; the same command finishes the job
rm -f i-*
qemu-img create -q -f raw i-base.img 320M
qemu-img create -q -f qcow2 -b i-base.img -F raw 'i-top 1.qcow2'
qemu-io -c 'write -P 9 0 300M' 'i-top 1.qcow2' >/dev/null
view 'i-top 1.qcow2' i-before.raw
stopped=0
for k in 1 2 3 4 5 6; do
    sig=INT; want=130
    [ $k = 6 ] && { sig=TERM; want=143; }
    rm -f i-base.img.qchain-commit i-base.img.qchain-committed
    qemu-img create -q -f raw i-base.img 320M
    "$C" 'i-top 1.qcow2' >out 2>err &
    pid=$!
    signal_when_exists $pid i-base.img.qchain-commit $sig 60 || kill -$sig $pid 2>/dev/null
    wait $pid; rc=$?
    if [ $rc -eq $want ]; then
        stopped=$((stopped + 1))
        if ! grep -q "^qchain-commit: interrupted; run the same command again to finish: qchain-commit 'i-top 1.qcow2'$" err \
            || [ ! -e i-base.img.qchain-commit ]; then
            bad "SIG$sig $k" "message or journal missing: $(cat err)"; continue; fi
    elif [ $rc -ne 0 ]; then
        bad "SIG$sig $k" "exit $rc: $(cat err)"; continue
    fi
    if ! qemu-img compare -q -f raw -F qcow2 i-before.raw 'i-top 1.qcow2'; then
        bad "SIG$sig $k" "guest view changed"; continue; fi
    if "$C" 'i-top 1.qcow2' >out 2>err && qemu-img compare -q -f raw -F raw i-before.raw i-base.img \
        && [ ! -e i-base.img.qchain-commit ]; then
        ok "SIG$sig $k: exit $rc, view intact, the same command finished the job"
    else
        bad "SIG$sig $k" "re-run: $(cat err)"
    fi
done
[ $stopped -ge 3 ] && ok "$stopped of 6 signals stopped the job mid-way" \
    || bad "signals" "only $stopped of 6 signals stopped the job mid-way"

# --- a second commit while one runs: refused, naming the running job
rm -f i-base.img.qchain-commit i-base.img.qchain-committed
qemu-img create -q -f raw i-base.img 320M
"$C" 'i-top 1.qcow2' >/dev/null 2>&1 &
pid=$!
signal_when_exists $pid i-base.img.qchain-commit STOP || kill -STOP $pid
uuid=$(sed -n 's/^uuid //p' i-base.img.qchain-commit)
"$C" 'i-top 1.qcow2' >out 2>err; rc=$?
kill -CONT $pid; wait $pid; rc1=$?
[ $rc -eq 1 ] && [ $rc1 -eq 0 ] \
    && grep -qx "qchain-commit: 'i-base.img': a commit is running on it: held by qchain-commit (pid $pid), job $uuid: wait for it to finish" err \
    && qemu-img compare -q -f raw -F raw i-before.raw i-base.img \
    && ok "a second commit while one runs: refused, the running job named" \
    || bad "second commit" "rc=$rc rc1=$rc1 $(cat err)"

# --- the base stays locked until the job's journal is gone: strace holds
# the journal's removal for 1.5 s, and meanwhile qemu-io cannot open the
# base (the old code closed it, and its lock, before the re-point)
if command -v strace >/dev/null; then
    rm -f l-*
    qemu-img create -q -f raw l-base.raw 16M
    qemu-img create -q -f qcow2 -b l-base.raw -F raw l-mid.qcow2
    qemu-io -c 'write -P 1 0 1M' l-mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b l-mid.qcow2 -F qcow2 l-top.qcow2
    # LeakSanitizer cannot run under ptrace (an ASan build aborts)
    ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" strace -f -qq -o /dev/null -P l-base.raw.qchain-commit -e trace=unlink,unlinkat \
        -e inject=unlink,unlinkat:delay_enter=1500000 \
        "$C" --top l-mid.qcow2 l-top.qcow2 >/dev/null 2>err &
    pid=$!
    signal_when_exists $pid l-base.raw.qchain-committed CONT || true
    sleep 0.7
    qemu-io -f raw -c "read 0 512" l-base.raw >info.out 2>&1; irc=$?
    wait $pid; rc=$?
    [ $rc -eq 0 ] && [ $irc -ne 0 ] && grep -q "lock" info.out && [ ! -e l-base.raw.qchain-commit ] \
        && ok "the base stays locked until the journal is gone" \
        || bad "base lock to the end" "commit rc=$rc, qemu-io rc=$irc: $(cat info.out err)"
fi

# --- dependents of committed layers: a fork of TOP keeps its view and TOP is
# not called unreferenced; a fork of a layer between TOP and BASE would read
# changed data: refused (--force commits, and names it); qchain-snapshot
# warns when it makes a fork
rm -f d-*
qemu-img create -q -f raw d-base.raw 16M
qemu-img create -q -f qcow2 -b d-base.raw -F raw d-s1.qcow2
qemu-io -c 'write -P 1 0 2M' d-s1.qcow2 >/dev/null
"$S" d-s1.qcow2 d-s2.qcow2 >/dev/null
qemu-io -c 'write -P 2 1M 2M' d-s2.qcow2 >/dev/null
"$S" d-s2.qcow2 d-s3.qcow2 >/dev/null
qemu-io -c 'write -P 4 6M 1M' d-s3.qcow2 >/dev/null
"$S" d-s1.qcow2 d-fork.qcow2 >/dev/null 2>err
grep -qx "qchain-snapshot: warning: 'd-s1.qcow2' is already the backing file of 'd-s2.qcow2': 'd-fork.qcow2' makes a fork (two images over one; committing either into 'd-s1.qcow2' changes what the other reads)" err \
    && ok "qchain-snapshot warns that it makes a fork" || bad "fork warning" "$(cat err)"
qemu-io -c 'write -P 3 4M 1M' d-fork.qcow2 >/dev/null
view d-fork.qcow2 d-fork.before
view d-s3.qcow2 d-s3.before
sums=$(md5sum d-base.raw d-s*.qcow2)
"$C" --top d-s2.qcow2 --base d-base.raw d-s3.qcow2 >/dev/null 2>err; rc=$?
[ $rc -eq 1 ] && grep -q "^qchain-commit: 'd-s1.qcow2': 1 other image outside this chain uses it as backing file and would read changed data once the layers above it are in 'd-base.raw'" err \
    && grep -qx "  d-fork.qcow2" err && [ "$sums" = "$(md5sum d-base.raw d-s*.qcow2)" ] \
    && ok "a fork of a layer between TOP and BASE: refused, named" \
    || bad "fork below TOP" "rc=$rc $(cat err)"
"$C" --json --top d-s1.qcow2 d-s3.qcow2 >j.json 2>err; rc=$?
[ $rc -eq 0 ] && [ "$(json_get j.json unreferenced)" = '[]' ] \
    && [ "$(json_get j.json dependents)" = '[{"filename": "d-fork.qcow2", "backing-filename": "d-s1.qcow2"}]' ] \
    && qemu-img compare -q -f raw -F qcow2 d-fork.before d-fork.qcow2 \
    && qemu-img compare -q -f raw -F qcow2 d-s3.before d-s3.qcow2 \
    && ok "a fork of TOP keeps its view; TOP not unreferenced, the fork named" \
    || bad "fork of TOP" "rc=$rc $(cat err j.json)"

# --- several disks of one VM: everything checked for all before any is
# written, then committed concurrently, each reported
rm -f m-*
qemu-img create -q -f raw m-b1.raw 64M
qemu-img create -q -f qcow2 m-b2.qcow2 64M
qemu-io -c 'write -P 1 0 8M' m-b2.qcow2 >/dev/null
"$S" m-b1.raw:m-t1.qcow2 m-b2.qcow2:m-t2.qcow2 >/dev/null
qemu-io -c 'write -P 2 0 30M' m-t1.qcow2 >/dev/null
qemu-io -c 'write -P 3 4M 20M' -c 'write -z 40M 8M' m-t2.qcow2 >/dev/null
view m-t1.qcow2 m-v1.raw; view m-t2.qcow2 m-v2.raw
sums=$(md5sum m-b1.raw m-b2.qcow2)
hold -n m-b2.qcow2
"$C" m-t1.qcow2 m-t2.qcow2 >/dev/null 2>err; rc=$?
release
[ $rc -eq 1 ] && grep -q "'m-b2.qcow2'.*held by qemu-io" err \
    && [ "$sums" = "$(md5sum m-b1.raw m-b2.qcow2)" ] && [ ! -e m-b1.raw.qchain-commit ] \
    && ok "several disks: the second base held, the first not written either" \
    || bad "several disks refused" "rc=$rc $(cat err)"
"$C" --top m-t1.qcow2 m-t1.qcow2 m-t2.qcow2 >/dev/null 2>err; rc=$?
[ $rc -eq 2 ] && grep -q "apply to a single ACTIVE" err \
    && ok "several disks: --top is a usage error" || bad "several disks --top" "rc=$rc $(cat err)"
"$C" --json m-t1.qcow2 m-t2.qcow2 >m.json 2>err; rc=$?
if [ $rc -eq 0 ] && qemu-img compare -q -f raw -F raw m-v1.raw m-b1.raw \
    && qemu-img compare -q -f raw -F qcow2 m-v2.raw m-b2.qcow2 && clean m-b2.qcow2 \
    && python3 - m.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert list(d) == ['disks'] and len(d['disks']) == 2, d
a, b = d['disks']
assert a['active'] == 'm-t1.qcow2' and a['base'] == 'm-b1.raw', a
assert b['active'] == 'm-t2.qcow2' and b['base'] == 'm-b2.qcow2', b
assert a['data-bytes'] == 30 << 20 and b['data-bytes'] == 20 << 20, (a, b)
assert b['zero-bytes'] == 8 << 20 and list(a) == list(b), b
PY
then ok "several disks committed concurrently, each reported (disks)"
else bad "several disks" "rc=$rc $(cat err m.json)"; fi
"$C" m-t1.qcow2 m-t2.qcow2 >out 2>err \
    && [ "$(grep -c 'had already completed' out)" = 2 ] && grep -q "^Disk 2 of 2, 'm-t2.qcow2':" out \
    && ok "several disks re-run: each had completed" || bad "several disks re-run" "$(cat err out)"

crash raw ""
crash qcow2 cluster_size=64k
crash qcow2 cluster_size=4k,refcount_bits=64
finish
