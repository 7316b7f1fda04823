#!/usr/bin/env bash
# qchain-delta against qemu-img map (data and zero sums per layer and over
# the committed layers), against qchain-commit (the same data and zero
# figures; base growth within 2% or 1 MiB of the real one), the rate and
# plan model, live images (-U with qemu-io / qemu-nbd holding them), and bad
# input.
. "$(dirname "$0")/../write/lib.sh"
C=$QCHAIN_BIN/qchain-commit
D=$QCHAIN_BIN/qchain-delta

# map_sums FILE MAXDEPTH [alone]: "data zero" summed from qemu-img map over
# entries above MAXDEPTH (data: data true; zero: zero true, data false);
# alone: FILE without its backing file, allocated entries only
map_sums() {
    local f=$1 max=$2 spec=$1
    [ "${3:-}" = alone ] && \
        spec="json:{\"driver\":\"qcow2\",\"backing\":null,\"file\":{\"driver\":\"file\",\"filename\":\"$f\"}}"
    qemu-img map --output=json "$spec" | python3 -c '
import json, sys
m = json.load(sys.stdin); mx = int(sys.argv[1]); alone = sys.argv[2] == "alone"
d = sum(e["length"] for e in m if e["depth"] < mx and e["data"] and (e["present"] or not alone))
z = sum(e["length"] for e in m if e["depth"] < mx and e["zero"] and not e["data"] and (e["present"] or not alone))
print(d, z)' "$max" "${3:-chain}"
}
jget() { json_get "$@"; }
# map_runs FILE MAXDEPTH: the guest-contiguous runs of data above MAXDEPTH
# in qemu-img map (entries with data true, adjacent ones joined)
map_runs() {
    qemu-img map --output=json "$1" | python3 -c '
import json, sys
m = json.load(sys.stdin); mx = int(sys.argv[1]); n = 0; end = -1
for e in m:
    if e["depth"] < mx and e["data"]:
        n += e["start"] != end
        end = e["start"] + e["length"]
print(n)' "$2"
}

# usage: growth_of FILE FORMAT: the measure base-growth-bytes estimates
# (raw: allocated bytes; qcow2: the file's size)
alloc_of() {
    if [ "$2" = raw ]; then echo $(( $(stat -c %b "$1") * 512 )); else stat -c %s "$1"; fi
}

# check_delta NAME ACTIVE TOPFILE BASEFILE BASEFMT: delta vs qemu-img map,
# then the commit on copies vs delta
check_delta() {
    local n=$1 act=$2 top=$3 base=$4 bfmt=$5 depth want got layers i f
    # depth of BASE below TOP, from qemu-img's own chain listing
    depth=$(qemu-img info --backing-chain --output=json "$top" | python3 -c '
import json, os, sys
chain = json.load(sys.stdin); base = os.path.realpath(sys.argv[1])
print([os.path.realpath(e["filename"]) for e in chain].index(base))' "$base")
    if ! "$D" --json --top "$top" --base "$base" "$act" > d.json 2>err; then
        bad "delta $n" "$(cat err)"; return; fi
    want=$(map_sums "$top" "$depth")
    got="$(jget d.json data-bytes) $(jget d.json zero-bytes)"
    if [ "$want" != "$got" ]; then
        bad "delta $n" "data/zero $got, qemu-img map says $want"; return; fi
    want=$(map_runs "$top" "$depth")
    [ "$(jget d.json data-runs)" = "$want" ] \
        || { bad "delta $n" "data-runs $(jget d.json data-runs), qemu-img map's data forms $want"; return; }
    layers=$(jget d.json layers | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
    [ "$layers" = "$depth" ] || { bad "delta $n" "$layers layers, want $depth"; return; }
    for ((i = 0; i < layers; i++)); do
        f=$(jget d.json layers $i filename | tr -d '"')
        want=$(map_sums "$f" 1 alone)
        got="$(jget d.json layers $i data-bytes) $(jget d.json layers $i zero-bytes)"
        if [ "$want" != "$got" ]; then
            bad "delta $n" "layer $f: data/zero $got, qemu-img map says $want"; return; fi
        [ "$(jget d.json layers $i file-size)" = "$(stat -c %s "$f")" ] \
            || { bad "delta $n" "layer $f: file-size"; return; }
    done
    # the commit, on copies: the same figures, growth as estimated
    rm -rf cc && mkdir cc && cp --sparse=always ./*.qcow2 ./*.raw cc/ 2>/dev/null
    ( cd cc
      "$D" --json --top "$top" --base "$base" "$act" > d2.json 2>err || exit 1
      b0=$(alloc_of "$base" "$bfmt")
      "$C" --json --top "$top" --base "$base" "$act" > c.json 2>err || exit 2
      b1=$(alloc_of "$base" "$bfmt")
      echo "$b0 $b1" > growth ) || { bad "delta $n" "commit on copies: $(cat cc/err)"; return; }
    for k in data-bytes zero-bytes; do
        [ "$(jget cc/c.json $k)" = "$(jget d.json $k)" ] \
            || { bad "delta $n" "commit reports $k $(jget cc/c.json $k), delta $(jget d.json $k)"; return; }
    done
    # runs on the copies (cp --sparse=always may make holes in data
    # clusters, which split runs)
    [ "$(jget cc/c.json data-runs)" = "$(jget cc/d2.json data-runs)" ] \
        || { bad "delta $n" "commit reports data-runs $(jget cc/c.json data-runs), delta $(jget cc/d2.json data-runs)"; return; }
    read -r b0 b1 < cc/growth
    local est; est=$(jget cc/d2.json base-growth-bytes)
    if ! python3 -c 'import sys; e, r = int(sys.argv[1]), int(sys.argv[2]); sys.exit(abs(e - r) > max(abs(r) * 0.02, 1 << 20))' "$est" $((b1 - b0)); then
        bad "delta $n" "base-growth-bytes $est, the commit grew the base by $((b1 - b0))"; return; fi
    ok "delta $n: $(jget d.json data-bytes) data in $(jget d.json data-runs) runs, $(jget d.json zero-bytes) zero; growth $est est. vs $((b1 - b0)) real"
}

# --- chains: raw base half written, two overlays; every TOP/BASE pair
chain3() { # base-kind base-opts mid-opts top-opts
    local bk=$1 bo=$2 mo=$3 to=$4
    rm -rf ./*.qcow2 ./*.raw cc
    if [ "$bk" = raw ]; then
        qemu-img create -q -f raw base.raw 96M
        qemu-io -f raw -c 'write -P 1 0 48M' base.raw >/dev/null
        B=base.raw
    else
        qemu-img create -q -f qcow2 -o "$bo" base.qcow2 96M
        qemu-io -c 'write -P 1 0 48M' base.qcow2 >/dev/null
        B=base.qcow2
    fi
    qemu-img create -q -f qcow2 -o "$mo" -b $B -F "$bk" mid.qcow2 96M
    qemu-io -c 'write -P 2 40M 16M' -c 'write -z 8M 4M' -c 'write -P 3 70M 4k' \
            -c 'write -c -P 4 80M 1M' -c 'write -P 5 90M 64k' mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o "$to" -b mid.qcow2 -F qcow2 top.qcow2 96M
    qemu-io -c 'write -P 6 0 1M' -c 'write -z 41M 2M' -c 'write -P 7 60M 3M' \
            -c 'write -c -P 8 84M 512k' -c 'write -P 9 70M 512' -c 'write -z 89M 4M' \
            top.qcow2 >/dev/null
}
pairs() { # name base-kind
    check_delta "$1 top->mid" top.qcow2 top.qcow2 mid.qcow2 qcow2
    check_delta "$1 top->base" top.qcow2 top.qcow2 "$B" "$2"
    check_delta "$1 mid->base (--top)" top.qcow2 mid.qcow2 "$B" "$2"
}
chain3 raw "" cluster_size=64k cluster_size=64k; pairs "raw base" raw
chain3 qcow2 cluster_size=64k cluster_size=64k cluster_size=64k; pairs "qcow2 base" qcow2
chain3 qcow2 cluster_size=512 cluster_size=4k cluster_size=2M; pairs "mixed clusters 512/4k/2M" qcow2
chain3 qcow2 extended_l2=on,cluster_size=32k extended_l2=on,cluster_size=64k cluster_size=16k
pairs "extended L2" qcow2
chain3 qcow2 compat=0.10,cluster_size=4k compat=0.10 compression_type=zstd
pairs "v2 base and mid, zstd top" qcow2
chain3 qcow2 refcount_bits=1,cluster_size=4k cluster_size=64k refcount_bits=64
pairs "1-bit refcounts" qcow2

# a base with an internal snapshot: writes into shared clusters allocate
rm -rf ./*.qcow2 ./*.raw cc
qemu-img create -q -f qcow2 base.qcow2 64M
qemu-io -c 'write -P 1 0 32M' base.qcow2 >/dev/null
qemu-img snapshot -c keep base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -c 'write -P 2 4M 8M' -c 'write -P 3 40M 2M' -c 'write -z 20M 1M' top.qcow2 >/dev/null
check_delta "qcow2 base with a snapshot" top.qcow2 top.qcow2 base.qcow2 qcow2

# grown bases: the top is larger (raw: truncate; qcow2: L1 growth)
for bk in raw qcow2; do
    rm -rf ./*.qcow2 ./*.raw cc
    if [ $bk = qcow2 ]; then qemu-img create -q -f qcow2 -o cluster_size=512 base.qcow2 16M
    else qemu-img create -q -f raw base.raw 16M; fi
    qemu-io -f $bk -c 'write -P 1 0 8M' base.$bk >/dev/null
    qemu-img create -q -f qcow2 -b base.$bk -F $bk top.qcow2 300M
    qemu-io -c 'write -P 2 4M 8M' -c 'write -P 3 100M 20M' -c 'write -P 4 290M 1M' top.qcow2 >/dev/null
    check_delta "grown $bk base" top.qcow2 top.qcow2 base.$bk $bk
done

# a large scattered delta over a raw base: 2048 x 4 KiB in 64 KiB clusters
rm -rf ./*.qcow2 ./*.raw cc
qemu-img create -q -f raw base.raw 256M
qemu-io -f raw -c 'write -P 1 0 128M' base.raw >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw top.qcow2
python3 -c '
import random
r = random.Random(7)
for c in r.sample(range(4096), 2048):
    print("write -P %d %d 4k" % (c % 250 + 1, c * 65536 + r.randrange(16) * 4096))
' > cmds
qemu-io top.qcow2 < cmds >/dev/null
check_delta "2048 scattered 4 KiB writes into a raw base" top.qcow2 top.qcow2 base.raw raw

# --- enabled persistent bitmaps: the commit marks them, and a bitmap
# cluster written for the first time is a new cluster of the base; with
# nothing freed (no snapshots, no compressed clusters in the base) the
# estimate is exact: base-required-bytes is the base's size after the
# commit (4 KiB clusters, 512-byte granularity: a bitmap cluster covers
# 16 MiB of guest, the writes reach 10 of them in each of two bitmaps)
rm -f bm-*
qemu-img create -q -f qcow2 -o cluster_size=4k bm-base.qcow2 256M
qemu-io -c 'write -P 1 0 1M' bm-base.qcow2 >/dev/null
qemu-img bitmap --add -g 512 bm-base.qcow2 b0
qemu-img bitmap --add -g 1k bm-base.qcow2 b1
qemu-img bitmap --add -g 512 --disable bm-base.qcow2 off
qemu-img create -q -f qcow2 -b bm-base.qcow2 -F qcow2 bm-top.qcow2
for i in 0 1 2 3 4 5 6 7 8 9; do echo "write -P $((i + 2)) $((i * 24 + 3))M 64k"; done \
    | qemu-io bm-top.qcow2 >/dev/null
"$D" --json bm-top.qcow2 > bm-d.json 2>err
"$C" bm-top.qcow2 > /dev/null 2>>err
[ "$(jget bm-d.json base-required-bytes)" = "$(stat -c %s bm-base.qcow2)" ] \
    && qemu-img check -q bm-base.qcow2 \
    && ok "delta: bitmap clusters counted, base-required-bytes = the base's size after the commit ($(stat -c %s bm-base.qcow2))" \
    || bad "delta bitmaps" "base-required-bytes $(jget bm-d.json base-required-bytes), the base is $(stat -c %s bm-base.qcow2): $(cat err)"

# --- a base with the dirty bit set: the commit rebuilds its refcounts
# first (new blocks and table past the end, the old ones freed) and then
# allocates; delta says so and counts the rebuild in the growth.  Checked
# against the real commit: the base's size and qemu-img check's
# image-end-offset afterwards (nothing is freed during these commits, so
# the prediction is exact), a clean check, the dirty bit cleared
dirty_case() { # name top-size top-writes...
    local n=$1 tsize=$2; shift 2
    local args=() w
    for w in "$@"; do args+=(-c "write $w"); done
    qemu-img create -q -f qcow2 -b dirty-base.qcow2 -F qcow2 dirty-top.qcow2 "$tsize"
    qemu-io "${args[@]}" dirty-top.qcow2 >/dev/null
    qemu-img info --output=json dirty-base.qcow2 > di.json
    [ "$(jget di.json dirty-flag)" = true ] \
        || { bad "dirty base $n" "the base is not dirty"; return; }
    "$D" --json dirty-top.qcow2 > dd.json 2>err && "$D" dirty-top.qcow2 > dd.txt 2>>err \
        || { bad "dirty base $n" "$(cat err)"; return; }
    local s0 s1 end est req rb
    s0=$(stat -c %s dirty-base.qcow2)
    "$C" dirty-top.qcow2 >dcommit.txt 2>err || { bad "dirty base $n" "commit: $(cat err)"; return; }
    grep -q "^The refcounts of 'dirty-base.qcow2' were rebuilt first (its dirty bit was set" dcommit.txt \
        || { bad "dirty base $n" "the commit does not say it rebuilt the refcounts: $(cat dcommit.txt)"; return; }
    s1=$(stat -c %s dirty-base.qcow2)
    qemu-img check --output=json dirty-base.qcow2 > dc.json
    end=$(jget dc.json image-end-offset)
    est=$(jget dd.json base-growth-bytes); req=$(jget dd.json base-required-bytes)
    rb=$(jget dd.json base-rebuild-bytes)
    if [ "$(jget dd.json base-dirty)" != true ] || [ "$rb" -le 0 ] ||
       ! grep -q "dirty bit is set.*rebuilds its refcounts, which allocates .* ($rb bytes), counted in the growth" dd.txt; then
        bad "dirty base $n" "not reported: $(cat dd.json dd.txt)"
    elif [ "$est" != $((s1 - s0)) ] || [ "$req" != "$end" ] || [ "$req" != "$s1" ]; then
        bad "dirty base $n" "predicted growth $est (required $req), real $((s1 - s0)) (end $end, size $s1)"
    elif ! qemu-img check -q dirty-base.qcow2 ||
         ! qemu-img info --output=json dirty-base.qcow2 > di.json ||
         [ "$(jget di.json dirty-flag)" != false ]; then
        bad "dirty base $n" "the committed base does not check clean"
    else
        ok "dirty base $n: growth $est predicted = real (rebuild $rb), end $end"
    fi
}
# lazy refcounts and a writer killed (abort): 40 MiB referenced with
# refcount 0, which a plain estimate would count as free space
rm -f dirty-*
qemu-img create -q -f qcow2 -o lazy_refcounts=on dirty-base.qcow2 256M
qemu-io -c 'write -P 1 0 8M' dirty-base.qcow2 >/dev/null
bash -c 'qemu-io -c "write -P 2 64M 40M" -c abort dirty-base.qcow2; true' >/dev/null 2>&1
dirty_case "(killed lazy-refcount writer)" 256M "-P 3 120M 24M" "-P 4 200M 1M" "-P 5 4M 1M"
# the dirty bit set on a clean image (refcounts right): the rebuild frees
# the old refcount blocks and table, which the commit reuses; 4 KiB
# clusters and 1-bit refcounts so the structures are many; the top grows
# the base
rm -f dirty-*
qemu-img create -q -f qcow2 -o lazy_refcounts=on,cluster_size=4k,refcount_bits=1 dirty-base.qcow2 64M
qemu-io -c 'write -P 1 0 20M' -c 'write -P 2 30M 300k' dirty-base.qcow2 >/dev/null
python3 -c '
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(72); v = struct.unpack(">Q", f.read(8))[0]
    f.seek(72); f.write(struct.pack(">Q", v | 1))' dirty-base.qcow2
dirty_case "(dirty bit set by hand, 1-bit refcounts, base grows)" 160M "-P 3 10M 4M" "-P 4 100M 30M" "-P 5 150M 64k"

# --- the rate and the plan follow the model exactly
rm -rf ./*.qcow2 ./*.raw cc
qemu-img create -q -f raw base.raw 64M
qemu-img create -q -f qcow2 -b base.raw -F raw top.qcow2
qemu-io -c 'write -P 1 0 40M' top.qcow2 >/dev/null
plan() { # name rate growth downtime: the JSON plan against the model, from
          # qemu-img map's data sum; times rounded to microseconds; the
          # human sentence with the same figures
    local n=$1
    if ! "$D" --json --rate "$2" --growth-rate "$3" --downtime "$4" top.qcow2 > p.json 2>err ||
       ! "$D" --rate "$2" --growth-rate "$3" --downtime "$4" top.qcow2 > p.txt 2>>err; then
        bad "plan $n" "$(cat err)"; return; fi
    if python3 - "$2" "$3" "$4" p.json p.txt "$(map_sums top.qcow2 1)" <<'PY'
import json, math, re, sys
from decimal import Decimal
def size(s):
    m = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(s[:-1]) * m[s[-1]] if s[-1] in m and s[-1] != "" else int(s)
def us(v):  # the tool's rounding: to microseconds
    return math.floor(v * 1e6 + 0.5) / 1e6
def human(v):  # three significant digits, 1 to 6 decimals, "0" for 0
    if v == 0:
        return "0"
    dec = min(max(2 - math.floor(math.log10(v)), 1), 6)
    t = "%.*f" % (dec, v)
    while t[-1] == "0" and t[-2] != ".":
        t = t[:-1]
    return t
rate, growth, down = size(sys.argv[1]), size(sys.argv[2]), float(sys.argv[3])
text = open(sys.argv[4]).read()
j = json.loads(text)
txt = open(sys.argv[5]).read()
d = int(sys.argv[6].split()[0])
assert j["data-bytes"] == d, (j["data-bytes"], d)
# every seconds value has at most 6 decimals as printed
for k, v in re.findall(r'"([a-z-]*seconds)": ([-0-9.e+]+)', text):
    assert Decimal(v).as_tuple().exponent >= -6, (k, v)
assert j["rate-bytes-per-second"] == rate, j
assert j["estimated-seconds"] == us(d / rate), (j["estimated-seconds"], d / rate)
k = 0
while True:
    if d / rate <= down:
        conv = True; break
    if k == 10 or growth >= rate:
        conv = False; break
    d = growth * d / rate; k += 1
p = j["plan"]
assert p["iterations"] == k and p["converges"] == conv, (p, k, conv)
assert p["final-data-bytes"] == round(d), (p, d)
assert p["final-seconds"] == us(d / rate), (p, d / rate)
assert p["downtime-seconds"] == us(down), p
assert p["growth-bytes-per-second"] == growth, p
if growth >= rate and j["data-bytes"] / rate > down:
    assert not conv and k == 0 and p["final-data-bytes"] == j["data-bytes"], p
    want = "commit offline now, in %s s (more than the downtime)" % human(d / rate)
    assert "would only make the delta larger" in txt and want in txt, txt
assert "downtime %s s:" % human(down) in txt, txt
assert "about %s s." % human(j["data-bytes"] / rate) in txt, txt
assert re.search(r" %s s[.) ]" % re.escape(human(d / rate)), txt), txt
PY
    then ok "plan $n: $(jget p.json plan iterations) rounds, converges $(jget p.json plan converges): $(tail -1 p.txt)"
    else bad "plan $n" "$(cat p.json p.txt)"; fi
}
plan "fits now" 100M 10M 1
plan "two rounds" 100M 10M 0.005
plan "many rounds" 1G 500M 0.001
plan "growth equal to rate" 100M 100M 0.1
plan "growth above rate" 100M 200M 0.1
plan "no growth" 1G 0 0.01
plan "downtime 0, no growth" 1G 0 0
plan "downtime 0, some growth" 1G 1M 0
plan "sub-millisecond downtime" 3M 1M 0.00025
plan "sub-second downtime, 7 rounds" 1G 700M 0.0004
plan "a third of a second" 3M 1M 0.333333333
plan "growth twice the rate, 1 s" 10M 20M 1
"$D" --json --rate 1M top.qcow2 > r.json 2>err && [ "$(jget r.json plan)" = '<absent>' ] \
    && [ "$(jget r.json estimated-seconds)" = 40 ] \
    && ok "--rate alone: estimated-seconds = data / rate" || bad "--rate alone" "$(cat err r.json)"

# --- live images: -U reads what a VM holds; without it, the lock refuses
"$D" --json top.qcow2 > offline.json
hold -n top.qcow2
if "$D" top.qcow2 >/dev/null 2>err; then bad "held by qemu-io, no -U" "accepted"
elif ! grep -qi "lock\|in use" err; then bad "held by qemu-io, no -U" "message: $(cat err)"
else ok "held by qemu-io: refused without -U ($(head -c 100 err))"; fi
"$D" -U --json top.qcow2 > live.json 2>err \
    && [ "$(jget live.json data-bytes)" = "$(jget offline.json data-bytes)" ] \
    && [ "$(jget live.json base-growth-bytes)" = "$(jget offline.json base-growth-bytes)" ] \
    && [ "$(jget live.json approximate)" = true ] \
    && ok "held by qemu-io: -U gives the offline figures, marked approximate" \
    || bad "held by qemu-io, -U" "$(cat err live.json)"
release
qemu-nbd -f qcow2 --socket="$work/nbd.sock" top.qcow2 >/dev/null 2>&1 &
pid=$!; cleanup_hooks+=("kill -9 $pid 2>/dev/null")
for _ in $(seq 50); do [ -S "$work/nbd.sock" ] && break; sleep 0.1; done
if "$D" top.qcow2 >/dev/null 2>err; then bad "held by qemu-nbd, no -U" "accepted"
else ok "held by qemu-nbd: refused without -U"; fi
"$D" -U --json top.qcow2 > live.json 2>err \
    && [ "$(jget live.json data-bytes)" = "$(jget offline.json data-bytes)" ] \
    && ok "held by qemu-nbd: -U gives the offline figures" \
    || bad "held by qemu-nbd, -U" "$(cat err)"
kill $pid; wait $pid 2>/dev/null

# --sample: the guest's writes between the two samples give the growth rate
"$D" -U --json --rate 1G --sample 2 --downtime 1 top.qcow2 > s.json 2>err &
spid=$!
sleep 1
qemu-io -c 'write -P 9 48M 4M' top.qcow2 >/dev/null
wait $spid && [ "$(jget s.json plan growth-bytes-per-second)" = $((2 << 20)) ] \
    && ok "--sample 2 with 4 MiB written meanwhile: 2 MiB/s" \
    || bad "--sample" "$(cat err s.json)"
# the figures reported are the ones at the end of the sample (qemu-img map
# of the image as it is after the write)
want=$(map_sums top.qcow2 1)
[ "$(jget s.json data-bytes) $(jget s.json zero-bytes)" = "$want" ] \
    && [ "$(jget s.json plan final-data-bytes)" = "$(jget s.json data-bytes)" ] \
    && ok "--sample: data-bytes measured at the end of the sample ($want)" \
    || bad "--sample figures" "data/zero $(jget s.json data-bytes) $(jget s.json zero-bytes), qemu-img map says $want"

# --- several ACTIVEs (the disks of one VM): each disk exactly as alone,
# the totals against qemu-img map and the real commits, the plan over the
# sums
rm -f m-*
qemu-img create -q -f raw m-a-base.raw 64M
qemu-io -f raw -c 'write -P 1 0 16M' m-a-base.raw >/dev/null
qemu-img create -q -f qcow2 -b m-a-base.raw -F raw m-a.qcow2
qemu-io -c 'write -P 2 8M 12M' -c 'write -z 40M 4M' m-a.qcow2 >/dev/null
qemu-img create -q -f qcow2 m-b-base.qcow2 128M
qemu-io -c 'write -P 3 0 8M' m-b-base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b m-b-base.qcow2 -F qcow2 m-b-mid.qcow2
qemu-io -c 'write -P 4 20M 6M' m-b-mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b m-b-mid.qcow2 -F qcow2 m-b.qcow2 160M
qemu-io -c 'write -P 5 100M 9M' -c 'write -z 2M 1M' m-b.qcow2 >/dev/null
qemu-img create -q -f qcow2 m-c-base.qcow2 32M
qemu-img create -q -f qcow2 -b m-c-base.qcow2 -F qcow2 m-c.qcow2
qemu-io -c 'write -P 6 0 3M' m-c.qcow2 >/dev/null
multi_opts=(--rate 20M --growth-rate 5M --downtime 0.2)
if "$D" --json "${multi_opts[@]}" m-a.qcow2 m-b.qcow2 m-c.qcow2 > m.json 2>err &&
   "$D" "${multi_opts[@]}" m-a.qcow2 m-b.qcow2 m-c.qcow2 > m.txt 2>>err &&
   "$D" --json "${multi_opts[@]}" m-a.qcow2 > m-1.json 2>>err &&
   "$D" --json "${multi_opts[@]}" m-b.qcow2 > m-2.json 2>>err &&
   "$D" --json "${multi_opts[@]}" m-c.qcow2 > m-3.json 2>>err &&
   "$D" "${multi_opts[@]}" m-a.qcow2 > m-1.txt 2>>err &&
   "$D" "${multi_opts[@]}" m-b.qcow2 > m-2.txt 2>>err &&
   "$D" "${multi_opts[@]}" m-c.qcow2 > m-3.txt 2>>err; then
    sums="$(map_sums m-a.qcow2 1) $(map_sums m-b.qcow2 1) $(map_sums m-c.qcow2 1)"
    # the commits, on copies: the real growth of each base
    rm -rf cc && mkdir cc && cp --sparse=always m-* cc/
    growth=$( cd cc && for p in "m-a.qcow2 m-a-base.raw raw" "m-b.qcow2 m-b-mid.qcow2 qcow2" \
                                 "m-c.qcow2 m-c-base.qcow2 qcow2"; do
        set -- $p; b0=$(alloc_of "$2" "$3"); "$C" "$1" >/dev/null || exit 1
        echo $(( $(alloc_of "$2" "$3") - b0 )); done | paste -sd' ')
    if python3 - m.json m.txt "$sums" "$growth" <<'PY'
import json, math, sys
j = json.load(open(sys.argv[1])); txt = open(sys.argv[2]).read()
s = [int(x) for x in sys.argv[3].split()]; real = [int(x) for x in sys.argv[4].split()]
singles = [json.load(open("m-%d.json" % i)) for i in (1, 2, 3)]
assert j["disks"] == singles, "a disk differs from its single-ACTIVE output"
assert list(j) == ["disks", "data-bytes", "zero-bytes", "base-growth-bytes",
                   "estimated-seconds", "plan"], list(j)
data, zero = sum(s[0::2]), sum(s[1::2])
assert (j["data-bytes"], j["zero-bytes"]) == (data, zero), (j["data-bytes"], j["zero-bytes"], data, zero)
g = j["base-growth-bytes"]
assert g == sum(d["base-growth-bytes"] for d in j["disks"])
assert abs(g - sum(real)) <= max(abs(sum(real)) * 0.02, 1 << 20), (g, real)
rate, growth, down = 20 << 20, 5 << 20, 0.2
us = lambda v: math.floor(v * 1e6 + 0.5) / 1e6
assert j["estimated-seconds"] == us(data / rate)
d, k = data, 0
while d / rate > down and k < 10 and growth < rate:
    d = growth * d / rate; k += 1
p = j["plan"]
assert p["iterations"] == k and p["final-data-bytes"] == round(d) and p["final-seconds"] == us(d / rate), (p, k, d)
assert p["growth-bytes-per-second"] == growth and p["converges"] == (d / rate <= down), p
# human: each disk's section is its single-ACTIVE output (the free-space
# line aside: other writers may move it), then the totals
strip = lambda t: [l for l in t.splitlines() if " free: " not in l]
parts = txt.split("\n\n")
for i in range(3):
    head, body = parts[i].split("\n", 1)
    assert head == "Disk %d of 3, 'm-%s.qcow2':" % (i + 1, "abc"[i]), head
    assert strip(body) == strip(open("m-%d.txt" % (i + 1)).read()), (body,)
assert "Totals over 3 disks: copies" in parts[3] and "(%d bytes)" % data in parts[3], parts[3]
assert "The bases grow by" in parts[3] and "(%d bytes)" % g in parts[3], parts[3]
assert "%d live round" % k in parts[3], parts[3]
PY
    then ok "three disks: each as alone, totals $(jget m.json data-bytes) data = qemu-img map's, growth $(jget m.json base-growth-bytes) est. vs $growth real, plan $(jget m.json plan iterations) rounds"
    else bad "three disks" "$(cat m.json m.txt)"; fi
else
    bad "three disks" "$(cat err)"
fi
# measured (the default): each disk calibrated beside its own base, the
# totals their sum; the plan over the sums at the summed rate
"$D" --json --growth-rate 1M --downtime 0.001 m-a.qcow2 m-b.qcow2 m-c.qcow2 > mm.json 2>err \
    && "$D" --growth-rate 1M --downtime 0.001 m-a.qcow2 m-b.qcow2 m-c.qcow2 > mm.txt 2>>err \
    && python3 - mm.json mm.txt <<'PY' && ok "three disks measured: the totals' seconds are the disks' sum, the plan at the summed rate" || bad "three disks measured" "$(cat err mm.json mm.txt)"
import json, sys
j = json.load(open(sys.argv[1])); txt = open(sys.argv[2]).read()
assert all(d["rate-source"] == "measured" and d["calibration"]["sample-bytes"] > 0 for d in j["disks"]), j
t = sum(d["estimated-seconds"] for d in j["disks"])
assert abs(j["estimated-seconds"] - t) <= 2e-6, (j["estimated-seconds"], t)
rate = j["data-bytes"] / j["estimated-seconds"]
assert abs(j["plan"]["final-seconds"] - j["plan"]["final-data-bytes"] / rate) <= 1e-3 * j["plan"]["final-seconds"] + 2e-6, (j["plan"], rate)
assert "One after the other, the commits take about " in txt, txt
PY
# one ACTIVE: the same bytes as before several were accepted (no totals)
"$D" --json m-c.qcow2 > m-one.json && [ "$(jget m-one.json disks)" = '<absent>' ] \
    && [ "$(jget m-one.json active)" = '"m-c.qcow2"' ] \
    && ok "one ACTIVE: the single-disk object, no disks list" || bad "one ACTIVE" "$(cat m-one.json)"
# --sample over two disks: one sleep, each disk's own rate, the sum for the
# totals, and the figures at the end of the sample
"$D" --json --rate 1G --sample 2 --downtime 1 m-a.qcow2 m-c.qcow2 > ms.json 2>err &
spid=$!
sleep 1
qemu-io -c 'write -P 7 50M 2M' m-a.qcow2 >/dev/null
qemu-io -c 'write -P 8 10M 4M' m-c.qcow2 >/dev/null
if wait $spid && python3 - ms.json "$(map_sums m-a.qcow2 1) $(map_sums m-c.qcow2 1)" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); s = [int(x) for x in sys.argv[2].split()]
r = [d["plan"]["growth-bytes-per-second"] for d in j["disks"]]
assert r == [1 << 20, 2 << 20], r
assert j["plan"]["growth-bytes-per-second"] == 3 << 20, j["plan"]
assert [d["data-bytes"] for d in j["disks"]] == [s[0], s[2]], (j, s)
assert j["data-bytes"] == s[0] + s[2]
PY
then ok "--sample over two disks: 1 and 2 MiB/s, 3 MiB/s in the totals, figures after the sample"
else bad "--sample over two disks" "$(cat err ms.json)"; fi

# --- history: each commit records what it did in the base's record; delta
# takes its time from the most recent comparable commit into that base
rm -f h-*
qemu-img create -q -f raw h-base.raw 64M
qemu-img create -q -f qcow2 -b h-base.raw -F raw h-s1.qcow2
scatter() { # image seed clusters
    python3 -c 'import random, sys
r = random.Random(int(sys.argv[1]))
for c in r.sample(range(1024), int(sys.argv[2])): print("write -P 7 %d 64k" % (c * 65536))' "$2" "$3" |
        qemu-io "$1" >/dev/null
}
scatter h-s1.qcow2 1 200
"$D" --json h-s1.qcow2 > h-d0.json
t0=$(date +%s)
"$C" --json h-s1.qcow2 > h-c1.json
t1=$(date +%s)
if python3 - h-base.raw.qchain-committed h-c1.json h-d0.json "$t0" "$t1" <<'PY'
import json, sys
rec = open(sys.argv[1]).read().splitlines()
c = json.load(open(sys.argv[2])); d = json.load(open(sys.argv[3]))
t0, t1 = int(sys.argv[4]), int(sys.argv[5])
assert "history" not in d and d["rate-source"] == "measured", d
h = [l for l in rec if l.startswith("history ")]
assert len(h) == 1 and len(rec) == 2, rec
f = dict(kv.split("=", 1) for kv in h[0].split()[2:])
assert f["base-format"] == "raw" and f["resumed"] == "0" and f["rebuilt"] == "0", f
assert int(f["data"]) == c["data-bytes"] and int(f["zero"]) == c["zero-bytes"], (f, c)
assert int(f["runs"]) == c["data-runs"] == d["data-runs"], (f, c, d)
assert t0 <= int(f["time"]) <= t1, (f, t0, t1)
# from the command's start until the base was durable (the report's
# seconds run from the copy to the re-point: neither contains the other)
assert 0 < float(f["seconds"]) <= t1 - t0 + 1, (f, c)
PY
then ok "history: the commit's line in the record (bytes, runs, seconds, date)"
else bad "history line" "$(cat h-base.raw.qchain-committed h-c1.json)"; fi
# a second overlay of the same shape: the time comes from that commit
qemu-img create -q -f qcow2 -b h-base.raw -F raw h-s2.qcow2
scatter h-s2.qcow2 2 300
"$D" --json --rate=history h-s2.qcow2 > h-d2.json
"$D" --json --rate 1G h-s2.qcow2 > h-d3.json
"$D" --json h-s2.qcow2 > h-d6.json
"$D" --rate=history h-s2.qcow2 > h-d2.txt
"$D" h-s2.qcow2 > h-d6.txt
if python3 - h-base.raw.qchain-committed h-d2.json h-d3.json h-d6.json <<'PY'
import json, sys
rec = [l for l in open(sys.argv[1]).read().splitlines() if l.startswith("history ")]
f = dict(kv.split("=", 1) for kv in rec[-1].split()[2:])
d = json.load(open(sys.argv[2])); g = json.load(open(sys.argv[3]))
m = json.load(open(sys.argv[4]))
# the default measures, and reports the history beside it
assert m["rate-source"] == "measured" and m["history"] == d["history"], m
assert "calibration" not in d and "calibration" not in g, (d, g)
rate = int(f["data"]) / float(f["seconds"])
assert d["rate-source"] == "history", d
assert d["rate-bytes-per-second"] == int(rate), (d, rate)
assert abs(d["estimated-seconds"] - d["data-bytes"] / int(rate)) < 1e-5, d
h = d["history"]
assert (h["data-bytes"], h["data-runs"]) == (int(f["data"]), int(f["runs"])), (h, f)
assert g["rate-source"] == "given" and g["rate-bytes-per-second"] == 1 << 30, g
assert g["history"] == h, g
PY
then ok "history: --rate=history takes the rate of the last commit into the base ($(jget h-d2.json rate-bytes-per-second) B/s), the default measures and reports it too, --rate overrides both"
else bad "history rate" "$(cat h-d2.json h-d6.json)"; fi
grep -q "^Going by the commit of 12.5 MiB into this base on .*, it takes about" h-d2.txt \
    && grep -q "^Measured here (.* committed beside the base, .* s in all): the commit takes about .* s (.*/s)\.$" h-d6.txt \
    && grep -q "^At the rate of the commit of 12.5 MiB into this base on .*, it takes about" h-d6.txt \
    && ok "history: one sentence in the human form, after the measured one by default" \
    || bad "history human" "$(cat h-d2.txt h-d6.txt)"
# one long run is not comparable with 200 scattered clusters
qemu-img create -q -f qcow2 -b h-base.raw -F raw h-s3.qcow2
qemu-io -c 'write -P 9 0 32M' h-s3.qcow2 >/dev/null
"$D" --json --rate=history h-s3.qcow2 > h-d4.json
"$D" --rate=history h-s3.qcow2 > h-d4.txt
[ "$(jget h-d4.json history)" = '<absent>' ] && [ "$(jget h-d4.json rate-source)" = '<absent>' ] \
    && [ "$(jget h-d4.json estimated-seconds)" = '<absent>' ] \
    && grep -qx "No time estimate (--rate=history): give --rate." h-d4.txt \
    && ok "history: a commit of another shape (one 32 MiB run) is not used: no time" \
    || bad "history shape" "$(cat h-d4.json h-d4.txt)"
# a record is read from a file: lines that do not parse, numbers out of
# range, a time too short to say anything are ignored; a good line counts
cp h-base.raw.qchain-committed h-saved.rec
runs=$(jget h-d2.json data-runs); data=$(jget h-d2.json data-bytes)
{
    echo "history 1 time=99999999999999999999999 base-format=raw data=$data zero=0 runs=$runs offloaded=0 compressed=0 seconds=1.000000 resumed=0 rebuilt=0"
    echo "history 1 time=1 base-format=raw data=18446744073709551615 zero=0 runs=$runs offloaded=0 compressed=0 seconds=0.000001 resumed=0 rebuilt=0"
    echo "history 1 time=2 base-format=raw data=$data zero=0 runs=$runs offloaded=0 compressed=0 seconds=-5 resumed=0 rebuilt=0"
    echo "history 1 time=3 base-format=rawrawrawraw data=$data zero=0 runs=$runs offloaded=0 compressed=0 seconds=1 resumed=0 rebuilt=0"
    echo "history 1 time=4 base-format=raw data=$data zero=0 runs=$runs offloaded=0 compressed=0 seconds=nan resumed=0 rebuilt=0"
    echo "history 1 time=5 base-format=raw data=$data zero=0 runs=$runs offloaded=0 compressed=0 seconds=2.0 resumed=2 rebuilt=0"
    echo "history 1 time=6 base-format=raw data=$data zero=0 runs=$runs offloaded=0 compressed=0 seconds=2.0 resumed=1 rebuilt=0"
    echo "history 1 time=7 base-format=raw data=${data}x zero=0 runs=$runs"
    echo "history 2 time=8 base-format=raw data=$data zero=0 runs=$runs offloaded=0 compressed=0 seconds=2.0 resumed=0 rebuilt=0"
    head -c 3000 /dev/zero | tr '\0' 'h'; echo
    echo "history 1 time=9 base-format=raw data=$data zero=0 runs=$runs offloaded=0 compressed=0 seconds=4.000000 resumed=0 rebuilt=0"
} > h-base.raw.qchain-committed
"$D" --json --rate=history h-s2.qcow2 > h-d5.json 2>err
[ "$(jget h-d5.json history time)" = 9 ] && [ "$(jget h-d5.json rate-bytes-per-second)" = $((data / 4)) ] \
    && ok "history: hostile lines in the record ignored, the good one used" \
    || bad "history hostile record" "$(cat err h-d5.json)"
mv h-saved.rec h-base.raw.qchain-committed

# --- calibration (--rate=auto, the default): a sample of the delta (at
# most 64 MiB, a few seconds) committed into scratch files beside the base,
# removed afterwards; the base and the layers are only read
SANITIZED=0
if ldd "$D" 2>/dev/null | grep -qE 'libasan|libubsan' || nm "$D" 2>/dev/null | grep -q '__asan_init'; then
    SANITIZED=1
fi
mkdir -p cal-b cal-t
qemu-img create -q -f raw cal-b/base.raw 256M
qemu-io -f raw -c 'write -P 3 0 64M' cal-b/base.raw >/dev/null
qemu-img create -q -f qcow2 -b ../cal-b/base.raw -F raw cal-t/top.qcow2
python3 -c 'import random
r = random.Random(21)
for c in sorted(r.sample(range(4096), 1536)): print("write -P 8 %d 64k" % (c * 65536))' |
    qemu-io cal-t/top.qcow2 >/dev/null
: > "cal-b/.base.raw.qchain-calibrate-999999999.top"  # a killed run's leftover
: > "cal-b/.base.raw.qchain-calibrate-$$.top"          # a live process's
sum0=$(md5sum < cal-b/base.raw); st0=$(stat -c '%s %Y %y' cal-b/base.raw)
top0=$(md5sum < cal-t/top.qcow2); dir0=$(stat -c %y cal-t)
if ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" strace -f -qq -o cal.trace \
       -e trace=openat,open,creat,unlink,unlinkat,rename,renameat,renameat2 \
       "$D" --json cal-t/top.qcow2 > cal.json 2>err &&
   python3 - cal.trace cal.json "$SANITIZED" "$$" <<'PY'
import json, os, re, sys
d = json.load(open(sys.argv[2])); sanitized = sys.argv[3] == "1"; me = sys.argv[4]
c = d["calibration"]
assert d["rate-source"] == "measured", d
assert d["data-bytes"] == 1536 * 65536, d
# bounded: 64 MiB of the 96 MiB delta, spread over it, within seconds
assert 0 < c["sample-bytes"] <= 64 << 20 and c["sample-bytes"] < d["data-bytes"], c
assert 2 <= c["sample-runs"] < d["data-runs"], (c, d["data-runs"])
assert 0 < d["calibration-seconds"] <= (10 if sanitized else 2.5), d
assert d["estimated-seconds"] > c["copy-seconds"], d
# the copy (and the read side) scaled by the bytes, the flush after it by
# the runs, the rest once; nothing to grow
assert c["flush-seconds"] > 0 and c["grow-seconds"] == 0, c
want = (d["data-bytes"] / c["sample-bytes"] * (c["copy-seconds"] + c["read-seconds"]) +
        d["data-runs"] / c["sample-runs"] * c["flush-seconds"] + c["overhead-seconds"])
assert abs(d["estimated-seconds"] - want) < 2e-5 * (1 + d["data-runs"] / c["sample-runs"]), (want, d)
assert abs(d["rate-bytes-per-second"] - d["data-bytes"] / d["estimated-seconds"]) <= 1e-4 * d["rate-bytes-per-second"], d
# where it wrote: every file created, renamed or removed is a scratch file
# beside the base; the base itself only opened for reading
made, gone = set(), set()
for line in open(sys.argv[1]):
    m = re.search(r'(openat|open|creat)\((?:AT_FDCWD, )?"([^"]+)", ([A-Z_|]+)', line)
    if m:
        p = os.path.normpath(m.group(2)); fl = m.group(3)
        if p == "cal-b/base.raw":
            assert "O_RDWR" not in fl and "O_WRONLY" not in fl, line
        if "O_CREAT" in fl and "= -1" not in line:
            made.add(p)
    for m in re.finditer(r'(?:unlink|unlinkat|rename|renameat2?)\((?:AT_FDCWD, )?"([^"]+)"', line):
        if "= -1" not in line:
            gone.add(os.path.normpath(m.group(1)))
assert made, "no scratch file made"
for p in made | gone:
    assert os.path.dirname(p) == "cal-b" and os.path.basename(p).startswith(".base.raw.qchain-calibrate-") \
        or p.startswith("cal-b/..base.raw.qchain-calibrate-"), p
assert "cal-b/.base.raw.qchain-calibrate-999999999.top" in gone, gone
assert "cal-b/.base.raw.qchain-calibrate-%s.top" % me not in gone, gone
PY
then
    if [ "$sum0" = "$(md5sum < cal-b/base.raw)" ] && [ "$st0" = "$(stat -c '%s %Y %y' cal-b/base.raw)" ] &&
       [ "$top0" = "$(md5sum < cal-t/top.qcow2)" ] && [ "$dir0" = "$(stat -c %y cal-t)" ] &&
       [ "$(ls -A cal-b | LC_ALL=C sort | tr '\n' ' ')" = ".base.raw.qchain-calibrate-$$.top base.raw " ] &&
       [ "$(ls -A cal-t)" = top.qcow2 ]; then
        ok "calibration: $(jget cal.json calibration sample-bytes) of $(jget cal.json data-bytes) bytes in $(jget cal.json calibration sample-runs) runs, $(jget cal.json calibration-seconds) s, scratch files beside the base only, all removed (a dead run's too), base and overlay untouched"
    else
        bad "calibration leaves" "$(ls -lA cal-b cal-t; stat cal-b/base.raw)"
    fi
else bad "calibration" "$(cat err cal.json; grep -E 'O_CREAT|unlink|rename' cal.trace | head -20)"; fi
rm -f "cal-b/.base.raw.qchain-calibrate-$$.top"
# a raw base whose first bytes are a qcow2 header (a guest may write one):
# its content goes into the scratch base, which is still read as raw
qemu-img create -q -f qcow2 cal-b/hdr.qcow2 64M
qemu-img create -q -f raw cal-b/qfi.raw 64M
dd if=cal-b/hdr.qcow2 of=cal-b/qfi.raw bs=64k count=1 conv=notrunc status=none
qemu-img create -q -f qcow2 -b ../cal-b/qfi.raw -F raw cal-t/qfi.qcow2
qemu-io -c 'write -P 5 0 128k' -c 'write -P 6 8M 1M' cal-t/qfi.qcow2 >/dev/null
sum0=$(md5sum < cal-b/qfi.raw)
"$D" --json cal-t/qfi.qcow2 > qfi.json 2>err && [ "$(jget qfi.json rate-source)" = '"measured"' ] \
    && [ "$sum0" = "$(md5sum < cal-b/qfi.raw)" ] \
    && [ -z "$(ls -A cal-b | grep calibrate)" ] \
    && ok "calibration: a raw base holding a qcow2 header is measured as raw" \
    || bad "calibration qfi" "$(cat err qfi.json)"
# a top larger than its base: the commit grows the base first, and so
# does the calibration, to its scratch base, timed (raw: a truncate;
# qcow2: a larger L1 table); the base is left as it was
for f in raw qcow2; do
    qemu-img create -q -f $f cal-b/small.$f 64M
    qemu-io -f $f -c 'write -P 1 0 8M' cal-b/small.$f >/dev/null
    qemu-img create -q -f qcow2 -b ../cal-b/small.$f -F $f cal-t/big.$f.qcow2 64M
    qemu-img resize -q cal-t/big.$f.qcow2 64G
    qemu-io -c 'write -P 5 0 1M' -c 'write -P 6 63G 4M' cal-t/big.$f.qcow2 >/dev/null
    sum0=$(md5sum < cal-b/small.$f); st0=$(stat -c '%s %Y' cal-b/small.$f)
    "$D" --json cal-t/big.$f.qcow2 > big.json 2>err &&
        python3 - big.json <<'PY' && [ "$sum0" = "$(md5sum < cal-b/small.$f)" ] \
            && [ "$st0" = "$(stat -c '%s %Y' cal-b/small.$f)" ] \
            && [ -z "$(ls -A cal-b | grep calibrate)" ] \
            && ok "calibration: a $f base smaller than the top: grown in the scratch copy ($(jget big.json calibration grow-seconds) s), counted once, the base untouched" \
            || bad "calibration grow $f" "$(cat err big.json; ls -A cal-b)"
import json, sys
d = json.load(open(sys.argv[1])); c = d["calibration"]
assert d["rate-source"] == "measured" and d["base-grows"] is True, d
assert c["sample-bytes"] == 5 << 20 and c["grow-seconds"] > 0, c
assert c["overhead-seconds"] >= c["grow-seconds"], c
PY
done
# zero ranges are sampled too (evenly spread zero runs, their share of the
# budget for the base's content under them), committed from a third
# scratch file after the data, timed apart and scaled by the bytes zeroed;
# a delta of zero ranges only is measured that way alone
python3 -c 'import random
r = random.Random(7)
for i, c in enumerate(sorted(r.sample(range(4096), 2048))):
    print(("write -z %d 64k" if i % 4 else "write -P 9 %d 64k") % (c * 65536))' > zmix.cmds
qemu-img create -q -f qcow2 -b ../cal-b/base.raw -F raw cal-t/zmix.qcow2
qemu-io cal-t/zmix.qcow2 < zmix.cmds >/dev/null
qemu-img create -q -f qcow2 -b ../cal-b/base.raw -F raw cal-t/zeros.qcow2
grep -- '-z' zmix.cmds | qemu-io cal-t/zeros.qcow2 >/dev/null
sum0=$(md5sum < cal-b/base.raw); st0=$(stat -c '%s %Y' cal-b/base.raw)
for z in zmix zeros; do
    ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" strace -f -qq -o $z.trace \
        -e trace=openat,open,creat,unlink,unlinkat,rename,renameat,renameat2 \
        "$D" --json cal-t/$z.qcow2 > $z.json 2>err && "$D" cal-t/$z.qcow2 > $z.txt 2>>err &&
    python3 - $z.json $z.txt $z.trace <<'PY' && [ "$sum0" = "$(md5sum < cal-b/base.raw)" ] \
        && [ "$st0" = "$(stat -c '%s %Y' cal-b/base.raw)" ] && [ -z "$(ls -A cal-b | grep calibrate)" ] \
        && ok "calibration, $z: $(jget $z.json calibration zero-sample-runs) of $(jget $z.json calibration zero-runs) zero runs ($(jget $z.json calibration zero-sample-bytes) bytes) committed apart in $(jget $z.json calibration zero-seconds) s, scratch files removed, the base untouched" \
        || bad "calibration $z" "$(cat err $z.json $z.txt)"
import json, os, re, sys
d = json.load(open(sys.argv[1])); c = d["calibration"]; txt = open(sys.argv[2]).read()
assert d["rate-source"] == "measured", d
assert c["zero-bytes"] == d["zero-bytes"] == 1536 * 65536, (c, d["zero-bytes"])
assert 0 < c["zero-sample-runs"] <= 256 and c["zero-sample-runs"] <= c["zero-runs"] <= 1536, c
assert 0 < c["zero-sample-bytes"] <= 16 << 20 and c["zero-seconds"] > 0, c
# the data's budget leaves 16 MiB to the zeros (a 32 MiB delta: all of it)
assert c["sample-bytes"] == d["data-bytes"] <= 48 << 20, c
runs = d["data-runs"] / c["sample-runs"] if c["sample-runs"] else 0
want = c["overhead-seconds"] + max(runs, 1) * c["flush-seconds"] + \
    c["zero-seconds"] * c["zero-bytes"] / c["zero-sample-bytes"]
if c["sample-bytes"]:
    want += d["data-bytes"] / c["sample-bytes"] * (c["copy-seconds"] + c["read-seconds"])
assert abs(d["estimated-seconds"] - want) < 1e-4, (want, d)
if d["data-bytes"] == 0:
    assert c["sample-runs"] == 0 and c["copy-seconds"] == 0, c
    assert re.search(r"^Measured here \(\d+ of its \d+ zero ranges committed beside the base, [\d.]+ s in all\): the commit takes about [\d.]+ s\.$", txt, re.M), txt
else:
    assert re.search(r"^Measured here \(.* of the delta in \d+ runs and \d+ of its \d+ zero ranges committed", txt, re.M), txt
made = set()
for line in open(sys.argv[3]):
    m = re.search(r'(openat|open|creat)\((?:AT_FDCWD, )?"([^"]+)", ([A-Z_|]+)', line)
    if m and "O_CREAT" in m.group(3) and "= -1" not in line:
        made.add(os.path.normpath(m.group(2)))
# the third scratch file (made under a temporary name, renamed), beside the
# base like the others
zero = [p for p in made if ".zero" in os.path.basename(p)]
assert len(zero) == 1 and os.path.dirname(zero[0]) == "cal-b" and \
    re.match(r"\.\.?base\.raw\.qchain-calibrate-\d+\.zero", os.path.basename(zero[0])), made
PY
done
# a base whose directory takes no new file (read-only): no measurement,
# the reason said, the history used where there is one
mkdir -p ro-b
if mount --bind cal-b ro-b 2>/dev/null && mount -o remount,bind,ro ro-b 2>/dev/null; then
    cleanup_hooks+=("umount '$work/ro-b' 2>/dev/null")
    qemu-img create -q -f qcow2 -b ../ro-b/base.raw -F raw cal-t/ro.qcow2
    qemu-io -c 'write -P 4 1M 1M' cal-t/ro.qcow2 >/dev/null
    "$D" --json cal-t/ro.qcow2 > ro.json 2>err; rc=$?
    "$D" cal-t/ro.qcow2 > ro.txt 2>>err
    [ $rc = 0 ] && [ "$(jget ro.json rate-source)" = '<absent>' ] \
        && grep -q "^No time estimate (cannot measure the commit rate beside the base: cannot create a scratch file beside the base: .*): give --rate\.$" ro.txt \
        && ok "calibration: a read-only directory beside the base: no time, the reason given" \
        || bad "calibration read-only" "exit $rc: $(cat err ro.json ro.txt)"
    umount ro-b
else
    bad "calibration read-only" "cannot make a read-only bind mount (root is needed)"
fi

# the record keeps the last 16 history lines, and its layer lines
qemu-img create -q -f raw h-b2.raw 16M
for i in $(seq 17); do
    qemu-img create -q -f qcow2 -b h-b2.raw -F raw h-r$i.qcow2
    qemu-io -c "write -P $i $((i * 64))k 64k" h-r$i.qcow2 >/dev/null
    "$C" h-r$i.qcow2 >/dev/null 2>err || bad "history record" "commit $i failed: $(cat err)"
done
[ "$(grep -c '^history ' h-b2.raw.qchain-committed)" = 16 ] \
    && [ "$(grep -vc '^history ' h-b2.raw.qchain-committed)" = 17 ] \
    && [ "$(grep '^history ' h-b2.raw.qchain-committed | head -1 | grep -o 'data=[0-9]*')" = data=65536 ] \
    && ok "history: the last 16 lines kept after 17 commits, every committed layer still listed" \
    || bad "history record" "$(cat h-b2.raw.qchain-committed)"

# --- bad input: exit 1 (images) or 2 (usage), with a message
refuse() { # name want args...
    local n=$1 want=$2; shift 2
    "$D" "$@" >/dev/null 2>err; rc=$?
    if [ $rc -ne "$want" ]; then bad "refuse $n" "exit $rc: $(cat err)"
    elif ! grep -q "^qchain-delta: " err; then bad "refuse $n" "message: $(cat err)"
    else ok "refuse: $n (exit $rc)"; fi
}
qemu-img create -q -f qcow2 lone.qcow2 16M
refuse "no backing file" 1 lone.qcow2
refuse "missing file" 1 missing.qcow2
refuse "BASE not in the chain" 1 --base lone.qcow2 top.qcow2
refuse "TOP at BASE" 1 --top base.raw --base base.raw top.qcow2
refuse "malformed rate" 2 --rate fast top.qcow2
refuse "zero rate" 2 --rate 0 top.qcow2
refuse "malformed downtime" 2 --rate 1M --growth-rate 1M --downtime soon top.qcow2
refuse "downtime without a growth rate" 2 --rate 1M --downtime 1 top.qcow2
refuse "downtime without any rate" 1 --rate=history --growth-rate 1M --downtime 1 top.qcow2
refuse "growth rate and sample" 2 --rate 1M --growth-rate 1M --sample 1 --downtime 1 top.qcow2
refuse "bad option" 2 --bogus top.qcow2
refuse "--top with two ACTIVEs" 2 --top top.qcow2 top.qcow2 lone.qcow2
refuse "--base with two ACTIVEs" 2 --base base.raw top.qcow2 lone.qcow2
refuse "one of two ACTIVEs without a backing file" 1 top.qcow2 lone.qcow2
finish
