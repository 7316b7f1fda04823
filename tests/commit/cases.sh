#!/usr/bin/env bash
# qchain-commit, the cases commit.sh leaves out, each held against QEMU's
# own tools (qemu-img, qemu-io, qemu-nbd) as the oracle:
#   1. persistent bitmaps of a qcow2 base record every range the commit
#      wrote (read back through qemu-nbd), a disabled one stays clean;
#   2. a raw base under tops of every kind (cluster sizes, extended L2,
#      zstd/zlib compression, compat=0.10, zero clusters), 2-layer chains
#      with the image above TOP re-pointed, and zeros over a sparse base;
#   3. siblings found through --search DIR (relative and absolute backing
#      names, symlinked directories), --force;
#   4. the progress output (-p, stderr not a terminal, a pseudo-terminal);
#   5. the locks held while a commit runs (stopped mid-way with SIGSTOP).
. "$(dirname "$0")/../write/lib.sh"
C=$QCHAIN_BIN/qchain-commit

view() { qemu-img convert -O raw "$1" "$2"; }
# alone IMAGE: a json: name opening a qcow2 image without its backing file
alone() { printf 'json:{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"%s"}}' "$1"; }

# ======================================================================
# 1. persistent bitmaps in a qcow2 base
#
# The oracle for a bitmap's bits is QEMU's: qemu-nbd exports the base
# with the bitmap (-B NAME), and qemu-img map reads it through the NBD
# client's x-dirty-bitmap option, which reports the bitmap's context in
# place of the allocation status.  Its convention, checked by hand on a
# 4 MiB image with a 64 KiB-granularity bitmap and one 4 KiB qemu-io write
# at 1 MiB (and again below, as a calibration, on every run): the dirty
# granules come out as "data": false (and "present": false), the clean
# ones as "data": true -- the map then says [0,1M) data, [1M,1M+64k) no
# data, [1M+64k,4M) data.
# ======================================================================

# ranges IMAGE: "start length" of every range the image itself allocates
# (data, zero or compressed clusters), backing file not opened
ranges() {
    qemu-img map --output=json "$(alone "$1")" | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if e["depth"] == 0 and e["present"]:
        print(e["start"], e["length"])'
}
# dirty IMAGE BITMAP: "start length" of the bitmap's dirty ranges, read by
# QEMU (qemu-nbd + qemu-img map x-dirty-bitmap); exit 1 if that failed.
# qemu-nbd (read-only, not --persistent) exits by itself once the client
# is gone; that takes it a second or two, not waited for: it holds only a
# shared read lock, and each export has a socket of its own.
nbd_seq=0
dirty() {
    local sock pidf rc
    nbd_seq=$((nbd_seq + 1)); sock=$work/nbd$nbd_seq.sock; pidf=$work/nbd$nbd_seq.pid
    qemu-nbd -r -f qcow2 -B "$2" --fork --pid-file "$pidf" -k "$sock" "$1" \
        2>"$work/nbd.err" || return 1
    cleanup_hooks+=("kill $(cat "$pidf") 2>/dev/null")
    qemu-img map --output=json --image-opts \
        "driver=nbd,server.type=unix,server.path=$sock,x-dirty-bitmap=qemu:dirty-bitmap:$2" \
        > "$work/dirty.json" 2>>"$work/nbd.err"
    rc=$?
    [ $rc -eq 0 ] || return 1
    python3 -c '
import json, sys
for e in json.load(open(sys.argv[1])):
    if not e["data"]:
        print(e["start"], e["length"])' "$work/dirty.json"
}
# bits_vs_ranges ALLOC DIRTY GRANULARITY SIZE: every allocated byte lies
# in a dirty range, every dirty granule holds an allocated byte (the
# rounding to the granularity is all that may add to the ranges), the
# dirty ranges are granule-aligned; prints what differs
bits_vs_ranges() {
    python3 - "$@" <<'PY'
import sys
def load(f):
    return [tuple(map(int, l.split())) for l in open(f) if l.strip()]
A, D = load(sys.argv[1]), load(sys.argv[2])
g, size = int(sys.argv[3]), int(sys.argv[4])
def granules(rs):
    s = set()
    for o, l in rs:
        s.update(range(o // g, (o + l - 1) // g + 1))
    return s
errs = []
for o, l in D:
    if o % g or ((o + l) % g and o + l != size):
        errs.append("dirty range %d+%d not aligned to %d" % (o, l, g))
merged = []  # D as disjoint intervals, adjacent ones joined
for o, l in sorted(D):
    if merged and o <= merged[-1][1]:
        merged[-1][1] = max(merged[-1][1], o + l)
    else:
        merged.append([o, o + l])
def inside(o, l):
    return any(s <= o and o + l <= e for s, e in merged)
for o, l in A:
    if not inside(o, l):
        errs.append("allocated %d+%d not (wholly) dirty" % (o, l))
extra = sorted(granules(D) - granules(A))
if extra:
    errs.append("dirty granules outside the committed ranges: %s"
                % ", ".join("%d" % (x * g) for x in extra[:8]))
print("; ".join(errs))
sys.exit(1 if errs else 0)
PY
}
# bitmap_flags IMAGE: "name granularity flags,..." per bitmap (qemu-img info)
bitmap_flags() {
    qemu-img info --output=json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin).get("format-specific", {}).get("data", {})
for b in d.get("bitmaps", []):
    print(b["name"], b["granularity"], ",".join(b["flags"]) or "-")'
}

# calibration: the oracle's convention on a write QEMU itself tracked
rm -f cal.qcow2
qemu-img create -q -f qcow2 cal.qcow2 4M
qemu-img bitmap --add cal.qcow2 bm
qemu-io -c 'write -P 1 1M 4k' cal.qcow2 >/dev/null
if [ "$(dirty cal.qcow2 bm)" = "1048576 65536" ]; then
    ok "oracle: qemu-nbd + x-dirty-bitmap shows QEMU's own dirty granule as data:false"
else
    bad "oracle calibration" "dirty ranges '$(dirty cal.qcow2 bm)' $(cat nbd.err)"
fi

bitmaps_case() { # bitmap-granularity overlay-cluster-size
    local g=$1 ocs=$2 size=$((64 << 20)) n="bitmaps g=$1 overlay cluster $2"
    local gopt=() flags err
    [ "$g" = 65536 ] || gopt=(-g "$g")   # 64k: qemu-img's default
    rm -f bm-*
    qemu-img create -q -f qcow2 bm-base.qcow2 $size
    qemu-io -c 'write -P 0x11 0 16M' -c 'write -P 0x12 40M 1M' bm-base.qcow2 >/dev/null
    qemu-img bitmap --add "${gopt[@]}" bm-base.qcow2 on
    qemu-img bitmap --add --disable bm-base.qcow2 off
    qemu-img create -q -f qcow2 -o cluster_size="$ocs" -b bm-base.qcow2 -F qcow2 bm-top.qcow2
    qemu-io -c 'write -P 0x21 1M 4k' -c 'write -P 0x22 3000000 1000' \
            -c 'write -z 4M 1M' -c 'write -z 50M 256k' -c 'write -z 14M 4k' \
            -c 'write -c -P 0x23 20M 256k' -c 'write -c -P 0x24 8M 128k' \
            -c 'write -P 0x25 33M 3M' -c 'write -P 0x26 40960k 64k' \
            -c "write -P 0x27 $((size - 65536)) 64k" bm-top.qcow2 >/dev/null
    ranges bm-top.qcow2 > bm-alloc
    view bm-top.qcow2 bm-before.raw
    if ! "$C" bm-top.qcow2 >/dev/null 2>bm-err; then bad "$n" "commit: $(cat bm-err)"; return; fi
    if ! [ -s bm-alloc ]; then bad "$n" "qemu-img map found nothing allocated"; return; fi
    if ! dirty bm-base.qcow2 on > bm-on; then bad "$n" "qemu-nbd: $(cat nbd.err)"; return; fi
    if ! dirty bm-base.qcow2 off > bm-off; then bad "$n" "qemu-nbd: $(cat nbd.err)"; return; fi
    view bm-base.qcow2 bm-after.raw
    flags=$(bitmap_flags bm-base.qcow2 | sort | tr '\n' ' ')
    if ! err=$(bits_vs_ranges bm-alloc bm-on "$g" $size); then
        bad "$n" "enabled bitmap vs the committed ranges: $err"
    elif [ -s bm-off ]; then bad "$n" "disabled bitmap dirty: $(tr '\n' ' ' < bm-off)"
    elif ! qemu-img check -q bm-base.qcow2; then bad "$n" "qemu-img check of the base"
    elif [ "$flags" != "off 65536 - on $g auto " ]; then
        bad "$n" "bitmaps after the commit: $flags (want 'off 65536 -' and 'on $g auto')"
    elif ! cmp -s bm-before.raw bm-after.raw; then bad "$n" "base differs from the overlay's view"
    else ok "$n: every committed range dirty in the enabled bitmap, disabled one clean"; fi
}
bitmaps_case 65536 64k
bitmaps_case 4096 64k
bitmaps_case 524288 4k

# ======================================================================
# 2. raw base, varied tops
# ======================================================================
rawtop() { # name top-opts chain(0: one overlay, 1: --top/--base under another) ops...
    local n="raw base <- $1" opts=$2 chain=$3 ops=() o
    shift 3
    for o in "$@"; do ops+=(-c "$o"); done
    rm -f rt-*
    qemu-img create -q -f raw rt-base.raw 32M
    qemu-io -f raw -c 'write -P 0x11 0 12M' -c 'write -P 0x12 20M 1M' rt-base.raw >/dev/null
    qemu-img create -q -f qcow2 -o "$opts" -b rt-base.raw -F raw rt-mid.qcow2
    if ! qemu-io "${ops[@]}" rt-mid.qcow2 > rt-io 2>&1 || grep -q "error\|failed" rt-io; then
        bad "$n" "qemu-io writes to the top: $(cat rt-io)"; return; fi
    view rt-mid.qcow2 rt-want.raw
    if [ "$chain" = 0 ]; then
        if ! "$C" rt-mid.qcow2 >/dev/null 2>rt-err; then bad "$n" "commit: $(cat rt-err)"
        elif ! cmp -s rt-want.raw rt-base.raw; then bad "$n" "base differs: $(cmp rt-want.raw rt-base.raw 2>&1)"
        else ok "$n ($opts)"; fi
        return
    fi
    n="$n <- qcow2, --top/--base"
    qemu-img create -q -f qcow2 -b rt-mid.qcow2 -F qcow2 rt-top.qcow2
    qemu-io -c 'write -P 0x31 2M 512k' -c 'write -z 9M 64k' -c 'write -P 0x32 28M 1M' \
        rt-top.qcow2 >/dev/null
    view rt-top.qcow2 rt-top-before.raw
    if ! "$C" --top rt-mid.qcow2 --base rt-base.raw rt-top.qcow2 >/dev/null 2>rt-err; then
        bad "$n" "commit: $(cat rt-err)"; return; fi
    qemu-img info --output=json rt-top.qcow2 > rt-info.json
    view rt-top.qcow2 rt-top-after.raw
    if ! cmp -s rt-want.raw rt-base.raw; then bad "$n" "base differs from TOP's view: $(cmp rt-want.raw rt-base.raw 2>&1)"
    elif [ "$(json_get rt-info.json backing-filename)" != '"rt-base.raw"' ] \
        || [ "$(json_get rt-info.json backing-filename-format)" != '"raw"' ]; then
        bad "$n" "image above not re-pointed: $(json_get rt-info.json backing-filename) $(json_get rt-info.json backing-filename-format)"
    elif ! cmp -s rt-top-before.raw rt-top-after.raw; then bad "$n" "view of the image above changed"
    elif ! qemu-img check -q rt-top.qcow2; then bad "$n" "qemu-img check of the image above"
    else ok "$n ($opts): base = TOP's view, image above re-pointed, its view unchanged"; fi
}
rawtop c512 cluster_size=512 0 'write -P 0x21 1M 3M' 'write -P 0x22 4097 1000' \
    'write -z 8M 2M' 'write -P 0x23 30M 64k' 'write -z 20M 1536'
rawtop c4k cluster_size=4k 1 'write -P 0x21 1M 3M' 'write -P 0x22 4097 1000' \
    'write -z 8M 2M' 'write -P 0x23 30M 64k' 'write -c -P 0x24 16M 64k'
rawtop c2m cluster_size=2M 0 'write -P 0x21 1M 4k' 'write -z 8M 2M' \
    'write -P 0x23 30M 64k' 'write -P 0x24 12M 512' 'write -z 20M 4k'
rawtop xl2 extended_l2=on,cluster_size=64k 1 'write -P 0x21 4k 4k' 'write -P 0x22 72k 8k' \
    'write -z 200k 8k' 'write -P 0x23 16M 4k' 'write -z 20M 8k' 'write -P 0x24 1M 64k' \
    'write -z 11M 1M'
rawtop zstd cluster_size=64k,compression_type=zstd 0 'write -c -P 0x21 0 256k' \
    'write -c -P 0x22 20M 128k' 'write -P 0x23 8M 1M' 'write -z 4M 64k' 'write -c -P 0x24 30M 1M'
rawtop zlib cluster_size=64k,compression_type=zlib 0 'write -c -P 0x21 0 256k' \
    'write -c -P 0x22 20M 128k' 'write -P 0x23 8M 1M' 'write -z 4M 64k' 'write -c -P 0x24 30M 1M'
rawtop v2 compat=0.10 0 'write -P 0x21 1M 3M' 'write -z 8M 2M' 'write -z 25M 1M' \
    'write -P 0x23 30M 64k' 'write -c -P 0x24 16M 64k'
rawtop zero cluster_size=64k 0 'write -z 0 1M' 'write -z 5M 64k' 'write -z 20M 1M' \
    'write -z 25M 2M' 'write -z 3001000 5000' 'write -z -u 6M 1M'

# sparse raw base, zeros over its data and over its holes: they read back
# as zeros, and the file's allocation does not grow (neither the zeros
# over data nor those over holes may allocate blocks)
rm -f sp-*
qemu-img create -q -f raw sp-base.raw 32M
qemu-io -f raw -c 'write -P 0x11 0 4M' -c 'write -P 0x12 8M 4M' sp-base.raw >/dev/null
qemu-img create -q -f qcow2 -b sp-base.raw -F raw sp-top.qcow2
qemu-io -c 'write -z 1M 2M' -c 'write -z 9M 64k' -c 'write -z 16M 4M' -c 'write -z 28M 1M' \
    -c 'write -z 11M 2M' sp-top.qcow2 >/dev/null
view sp-top.qcow2 sp-want.raw
blocks0=$(stat -c %b sp-base.raw)
# holes OFFSET LENGTH...: exit 0 if every range is a hole (SEEK_DATA)
holes() {
    python3 - sp-base.raw "$@" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
a = list(map(int, sys.argv[2:]))
for o, l in zip(a[::2], a[1::2]):
    try:
        d = os.lseek(fd, o, os.SEEK_DATA)
    except OSError:
        continue  # no data after o
    if d < o + l:
        print("data at %d in hole range %d+%d" % (d, o, l)); sys.exit(1)
PY
}
if ! holes $((12 << 20)) $((20 << 20)); then
    bad "sparse raw base" "premise: [12M,32M) is not a hole before the commit"
elif ! "$C" sp-top.qcow2 >/dev/null 2>sp-err; then bad "sparse raw base" "commit: $(cat sp-err)"
elif ! cmp -s sp-want.raw sp-base.raw; then bad "sparse raw base" "base differs: $(cmp sp-want.raw sp-base.raw 2>&1)"
elif ! qemu-io -f raw -c 'read -P 0 1M 2M' -c 'read -P 0 9M 64k' -c 'read -P 0 11M 1M' \
        -c 'read -P 0 16M 4M' -c 'read -P 0 28M 1M' sp-base.raw > sp-io 2>&1 \
     || grep -q "Pattern verification failed\|error" sp-io; then
    bad "sparse raw base" "zeroed ranges do not read as zeros: $(grep -i 'fail\|error' sp-io | head -3)"
elif [ "$(stat -c %b sp-base.raw)" -gt "$blocks0" ]; then
    bad "sparse raw base" "allocation grew: $blocks0 -> $(stat -c %b sp-base.raw) blocks"
elif ! err=$(holes $((12 << 20)) $((20 << 20))); then
    bad "sparse raw base" "zeros over holes allocated: $err"
else ok "sparse raw base: zeros over data and holes read as zeros, allocation not grown ($blocks0 -> $(stat -c %b sp-base.raw) blocks)"; fi

# ======================================================================
# 3. siblings through --search DIR
# ======================================================================
sib_setup() { # the chain b/base.raw <- b/top.qcow2, o/ with a decoy
    rm -rf b o x alias
    mkdir b o
    qemu-img create -q -f raw b/base.raw 16M
    qemu-io -f raw -c 'write -P 0x11 0 8M' b/base.raw >/dev/null
    qemu-img create -q -f qcow2 -b base.raw -F raw b/top.qcow2
    qemu-io -c 'write -P 0x21 1M 2M' -c 'write -z 6M 1M' b/top.qcow2 >/dev/null
    # a decoy: o/base.raw is another file of the same name, its overlay no sibling
    qemu-img create -q -f raw o/base.raw 16M
    qemu-img create -q -f qcow2 -b base.raw -F raw o/decoy.qcow2
    view b/top.qcow2 sib-want.raw
}
sib_sums() { md5sum b/* o/* 2>/dev/null; }
# sib_refused NAME WANT-LISTED... -- commit-args...: exit 1, every WANT
# listed on a line of its own, nothing changed
sib_refused() {
    local n=$1 want=() sums rc w miss=""
    shift
    while [ "$1" != -- ]; do want+=("$1"); shift; done
    shift
    sums=$(sib_sums)
    "$C" "$@" >/dev/null 2>sib-err; rc=$?
    for w in "${want[@]}"; do grep -qxF "  $w" sib-err || miss="$miss $w"; done
    if [ $rc -ne 1 ]; then bad "$n" "exit $rc: $(cat sib-err)"
    elif [ -n "$miss" ]; then bad "$n" "not listed:$miss in: $(cat sib-err)"
    elif grep -q decoy sib-err; then bad "$n" "the decoy (backed by another base.raw) listed: $(cat sib-err)"
    elif [ "$sums" != "$(sib_sums)" ]; then bad "$n" "files changed"
    else ok "$n"; fi
}
sib_commits() { # name commit-args...
    local n=$1 rc; shift
    "$C" "$@" >/dev/null 2>sib-err; rc=$?
    if [ $rc -ne 0 ]; then bad "$n" "exit $rc: $(cat sib-err)"
    elif ! cmp -s sib-want.raw b/base.raw; then bad "$n" "base differs from the view"
    else ok "$n"; fi
}
sib_setup
qemu-img create -q -f qcow2 -b ../b/base.raw -F raw o/sib-rel.qcow2
qemu-img create -q -f qcow2 -b "$work/b/base.raw" -F raw o/sib-abs.qcow2
sib_refused "--search DIR (relative DIR): siblings with relative and absolute backing names refused" \
    o/sib-rel.qcow2 o/sib-abs.qcow2 -- --search o b/top.qcow2
grep -q "2 other images" sib-err && ok "--search: the refusal counts both siblings" \
    || bad "--search count" "$(head -1 sib-err)"
sib_refused "--search DIR (absolute DIR)" "$work/o/sib-rel.qcow2" "$work/o/sib-abs.qcow2" \
    -- --search "$work/o" b/top.qcow2
sib_refused "--search twice: only one DIR with siblings" o/sib-rel.qcow2 o/sib-abs.qcow2 \
    -- --search b --search o b/top.qcow2
sib_commits "without --search, siblings in another directory are not seen" b/top.qcow2
sib_setup
qemu-img create -q -f qcow2 -b ../b/base.raw -F raw o/sib-rel.qcow2
sib_commits "--force --search DIR commits despite the sibling" --force --search o b/top.qcow2
sib_setup
sib_commits "--search DIR with only an image backed by another file of BASE's name: commits" \
    --search o b/top.qcow2

# a --search that cannot be read is an error (it is the safety net), and an
# image in the search that cannot be read is reported, not skipped
sib_setup
sums=$(sib_sums)
"$C" --search nowhere b/top.qcow2 >/dev/null 2>sib-err; rc=$?
[ $rc -eq 1 ] && grep -q "^qchain-commit: 'nowhere': cannot search it for images that use the base: No such file or directory$" sib-err \
    && [ "$sums" = "$(sib_sums)" ] && [ ! -e b/base.raw.qchain-commit ] \
    && ok "--search of a missing directory: exit 1, nothing written" \
    || bad "--search missing" "exit $rc: $(cat sib-err)"
"$C" --search b/top.qcow2 b/top.qcow2 >/dev/null 2>sib-err; rc=$?
[ $rc -eq 1 ] && grep -q "cannot search it for images that use the base: Not a directory" sib-err \
    && [ "$sums" = "$(sib_sums)" ] \
    && ok "--search of a file: exit 1, nothing written" || bad "--search file" "exit $rc: $(cat sib-err)"
printf 'QFI\373garbage' > o/broken.qcow2
mkfifo o/fifo
"$C" --search o b/top.qcow2 >/dev/null 2>sib-err; rc=$?
[ $rc -eq 0 ] && grep -q "^qchain-commit: warning: 'o/broken.qcow2': cannot read it to tell its backing file: " sib-err \
    && ! grep -q fifo sib-err && cmp -s sib-want.raw b/base.raw \
    && ok "--search: an unreadable image reported, a FIFO passed over, the commit done" \
    || bad "--search unreadable" "exit $rc: $(cat sib-err)"
rm -f o/broken.qcow2 o/fifo

# siblings in BASE's own directory naming it through a symlinked directory:
# alias -> b, and b/deep -> ../x/y/z, where deep/.. is x/y (the kernel's
# reading) and not b (a lexical one): deep/../../../b/base.raw is the base
sib_setup
mkdir -p x/y/z; ln -s b alias; ln -s ../x/y/z b/deep
qemu-img create -q -f qcow2 -b ../alias/base.raw -F raw b/sib-alias.qcow2
sib_refused "sibling in BASE's directory backed by ../alias/base.raw (alias -> b)" \
    b/sib-alias.qcow2 -- b/top.qcow2
rm b/sib-alias.qcow2
if qemu-img create -q -f qcow2 -b deep/../../../b/base.raw -F raw b/sib-deep.qcow2 \
    && python3 -c 'import os, sys; sys.exit(not os.path.samefile("b/deep/../../../b/base.raw", "b/base.raw"))'; then
    sib_refused "sibling backed by deep/../../../b/base.raw (deep -> ../x/y/z)" \
        b/sib-deep.qcow2 -- b/top.qcow2
else bad "symlinked sibling" "premise: deep/../../../b/base.raw is not the base"; fi
rm -f b/sib-deep.qcow2
sib_commits "the chain commits once the symlinked siblings are gone" b/top.qcow2

# ======================================================================
# 4. progress
# ======================================================================
pr_setup() {
    rm -f pr-*
    qemu-img create -q -f raw pr-base.raw 64M
    qemu-io -f raw -c 'write -P 0x11 0 16M' pr-base.raw >/dev/null
    qemu-img create -q -f qcow2 -b pr-base.raw -F raw pr-top.qcow2
    qemu-io -c 'write -P 0x21 4M 24M' -c 'write -z 40M 8M' -c 'write -P 0x22 60M 1M' \
        pr-top.qcow2 >/dev/null
}
# progress_ok FILE [tty]: every \r-separated piece a progress line,
# percentages not decreasing, the last one 100% with DONE = TOTAL and the
# only one with a newline.  tty: FILE is what a terminal got (\n arrives as
# \r\n), the progress lines are cut out of the rest of the output.
progress_ok() {
    python3 - "$@" <<'PY'
import re, sys
s = open(sys.argv[1], newline="").read()
if len(sys.argv) > 2:
    s = s.replace("\r\n", "\n")
    if "%] " not in s:
        print("no progress line"); sys.exit(1)
    a = s.find("\r  [")
    s = s[a if a >= 0 else 0:s.find("\n", s.rindex("%] ")) + 1]
pat = re.compile(r"  \[ *(\d+)%\] (\S+ \S+) / (\S+ \S+), \S+ \S+/s, \d+ s left *(\n?)$")
if not s.startswith("\r"):
    print("does not start with \\r: %r" % s[:60]); sys.exit(1)
pieces = s[1:].split("\r")
last = -1
for i, p in enumerate(pieces):
    m = pat.match(p)
    if not m:
        print("not a progress line: %r" % p); sys.exit(1)
    pc = int(m.group(1))
    if pc < last or pc > 100:
        print("percentage %d after %d" % (pc, last)); sys.exit(1)
    last = pc
    if m.group(4) and i != len(pieces) - 1:
        print("a newline before the last update (%d of %d): %r"
              % (i + 1, len(pieces), pieces)); sys.exit(1)
m = pat.match(pieces[-1])
if m.group(1) != "100" or m.group(2) != m.group(3) or m.group(4) != "\n":
    print("final line: %r" % pieces[-1]); sys.exit(1)
print(len(pieces))
PY
}
pr_setup
view pr-top.qcow2 pr-want.raw
if ! "$C" -p pr-top.qcow2 > pr-out 2> pr-err; then bad "-p" "commit: $(cat pr-err)"
elif ! err=$(progress_ok pr-err); then bad "-p, stderr a file" "$err"
elif ! grep -q "^Committed" pr-out || grep -q '%\]' pr-out; then bad "-p" "stdout: $(cat pr-out)"
elif ! cmp -s pr-want.raw pr-base.raw; then bad "-p" "base differs from the view"
else ok "-p, stderr a file: $err progress line(s), the last 100% with DONE = TOTAL"; fi

pr_setup
if ! "$C" --progress --json pr-top.qcow2 > pr-out 2> pr-err; then bad "--progress --json" "commit: $(cat pr-err)"
elif ! err=$(progress_ok pr-err); then bad "--progress --json" "$err"
elif ! python3 -c 'import json, sys; json.load(open(sys.argv[1]))' pr-out 2>/dev/null; then
    bad "--progress --json" "stdout is not JSON: $(cat pr-out)"
else ok "--progress --json: progress on stderr, JSON alone on stdout"; fi

pr_setup
"$C" pr-top.qcow2 > pr-out 2> pr-err; rc=$?
[ $rc -eq 0 ] && [ ! -s pr-err ] && grep -q "^Committed" pr-out \
    && ok "without -p, stderr not a terminal: stderr empty" \
    || bad "no -p" "exit $rc, stderr: $(od -c pr-err | head -3)"

if command -v script >/dev/null; then
    pr_setup
    script -qec "'$C' pr-top.qcow2" /dev/null < /dev/null > pr-tty 2>&1; rc=$?
    if [ $rc -ne 0 ]; then bad "pseudo-terminal" "exit $rc: $(cat pr-tty)"
    elif ! grep -q "Committed" pr-tty; then bad "pseudo-terminal" "no report: $(cat pr-tty)"
    elif ! err=$(progress_ok pr-tty tty); then
        bad "pseudo-terminal, human output without -p: progress" "$err: $(od -c pr-tty | head -5)"
    else ok "pseudo-terminal, human output without -p: progress shown ($err line(s))"; fi
else
    echo "# skip: pseudo-terminal progress check ('script' from util-linux missing)"
fi

# ======================================================================
# 5. locks while a commit runs
#
# BASE (1 GiB) <- low (~400 MiB) <- mid <- act; committing low into BASE
# re-points mid: BASE and mid are held for writing, low and act only for
# reading (qemu-img -U reads them; nobody may write low, being copied).
# The commit is stopped (SIGSTOP) as soon as its journal exists, which it
# writes once all its locks are taken, and resumed (SIGCONT) after.
#
# What QEMU refuses depends on BASE's format, and QEMU's own writer is
# the oracle (checked below against a stopped qemu-io holding BASE
# read-write, as premises): the qcow2 driver lets nobody write under a
# reader, so qemu-img info, qemu-io -r and a second writer of a qcow2 image
# all fail with a lock error; the raw driver shares every permission, so
# all three succeed on a raw image, whoever holds it.  No lock QEMU honours
# can keep qemu-img info or qemu-io -r off a raw BASE, then; but the commit
# unshares writing, which QEMU honours for raw too: a writer is refused.
# probe NAME EXPECT(lock|ok) command...: a QEMU command's result
probe() {
    local n=$1 want=$2 rc; shift 2
    "$@" > l-q 2>&1; rc=$?
    if [ "$want" = lock ]; then
        [ $rc -ne 0 ] && grep -qi lock l-q && ok "$n refused (lock)" \
            || bad "$n" "exit $rc (want a lock error): $(head -3 l-q)"
    else
        [ $rc -eq 0 ] && ok "$n allowed" || bad "$n" "exit $rc: $(head -3 l-q)"
    fi
}
# base_probes WHO FMT BASE WRITE-EXPECT: what QEMU may do with BASE
base_probes() {
    local who=$1 fmt=$2 b=$3 img=$3 rd=lock
    [ "$fmt" = qcow2 ] && img=$(alone "$b")
    [ "$fmt" = raw ] && rd=ok
    probe "$who: qemu-img info of a $fmt BASE" $rd qemu-img info -f "$fmt" "$b"
    probe "$who: qemu-io -r read of a $fmt BASE" $rd qemu-io -r -f "$fmt" -c 'read 0 512' "$img"
    probe "$who: qemu-io write to a $fmt BASE" "$4" qemu-io -f "$fmt" -c 'write -P 0x55 0 512' "$img"
}
stopped() { case $(ps -o stat= -p "$1") in T*) return 0;; esac; return 1; }
locks_case() { # base-format
    local fmt=$1 pid rc n="locks, $1 base"
    rm -f l-*
    qemu-img create -q -f "$fmt" l-base.img 1G
    qemu-io -f "$fmt" -c 'write -P 0x11 0 8M' -c 'write -P 0x12 900M 8M' l-base.img >/dev/null
    # the oracle: QEMU's own writer on BASE
    hold -n l-base.img -f "$fmt"
    base_probes "premise, qemu-io writing" "$fmt" l-base.img "$([ "$fmt" = raw ] && echo ok || echo lock)"
    release
    qemu-img create -q -f qcow2 -b l-base.img -F "$fmt" l-low.qcow2
    qemu-io -c 'write -P 0x21 4M 400M' -c 'write -z 600M 16M' -c 'write -P 0x22 904M 1M' \
        l-low.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b l-low.qcow2 -F qcow2 l-mid.qcow2
    qemu-io -c 'write -P 0x31 0 1M' -c 'write -P 0x32 300M 1M' l-mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b l-mid.qcow2 -F qcow2 l-act.qcow2
    qemu-io -c 'write -P 0x41 2M 1M' l-act.qcow2 >/dev/null
    view l-low.qcow2 l-want.raw
    view l-act.qcow2 l-act-before.raw
    "$C" --top l-low.qcow2 --base l-base.img l-act.qcow2 > l-out 2> l-err &
    pid=$!; cleanup_hooks+=("kill -9 $pid 2>/dev/null")
    signal_when_exists $pid l-base.img.qchain-commit STOP
    for _ in $(seq 100); do stopped $pid && break; sleep 0.01; done
    if ! stopped $pid || [ ! -e l-base.img.qchain-commit ]; then
        bad "$n" "could not stop the commit while it ran (state '$(ps -o stat= -p $pid)')"
    else
        base_probes "$n, commit running" "$fmt" l-base.img lock
        probe "$n, commit running: qemu-img info of the image to re-point" lock \
            qemu-img info l-mid.qcow2
        probe "$n, commit running: qemu-io -r read of the image to re-point" lock \
            qemu-io -r -c 'read 0 512' "$(alone l-mid.qcow2)"
        probe "$n, commit running: qemu-io write to TOP (being copied)" lock \
            qemu-io -c 'write -P 0x55 0 512' "$(alone l-low.qcow2)"
        probe "$n, commit running: qemu-img info -U of ACTIVE (only read)" ok \
            qemu-img info -U l-act.qcow2
        probe "$n, commit running: qemu-img info -U of TOP" ok qemu-img info -U l-low.qcow2
    fi
    kill -CONT $pid; wait $pid; rc=$?
    qemu-img info --output=json l-mid.qcow2 > l-info.json
    if [ $rc -ne 0 ]; then bad "$n: the resumed commit" "exit $rc: $(cat l-err)"
    elif ! qemu-img compare -q -f raw -F "$fmt" l-want.raw l-base.img; then bad "$n" "base differs from TOP's view"
    elif [ "$fmt" = qcow2 ] && ! qemu-img check -q l-base.img; then bad "$n" "qemu-img check of the base"
    elif [ "$(json_get l-info.json backing-filename)" != '"l-base.img"' ] \
        || [ "$(json_get l-info.json backing-filename-format)" != "\"$fmt\"" ]; then
        bad "$n" "image above TOP not re-pointed: $(json_get l-info.json backing-filename)"
    elif ! qemu-img compare -q -f qcow2 -F raw l-act.qcow2 l-act-before.raw; then bad "$n" "ACTIVE's view changed"
    elif [ -e l-base.img.qchain-commit ]; then bad "$n" "journal left behind"
    else ok "$n: after SIGCONT the commit completes, base = TOP's view, ACTIVE's view unchanged"; fi
    rm -f l-*
}
locks_case raw
locks_case qcow2
finish
