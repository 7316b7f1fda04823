#!/usr/bin/env bash
# qchain-create against qemu-img: every option gives an image qemu-img
# check finds clean, qemu-img info reports what was asked (the same as for
# qemu-img create with the same options), qemu-io can write into it; bad
# options are refused and leave no file.
. "$(dirname "$0")/lib.sh"
C=$QCHAIN_BIN/qchain-create

same_info() { # name opts size
    local n=$1 o=$2 s=$3 args=()
    [ -n "$o" ] && args=(-o "$o")
    rm -f "$n.qcow2" "ref-$n.qcow2"
    if ! "$C" "${args[@]}" "$n.qcow2" "$s" >/dev/null 2>err; then
        bad "create $n ($o)" "$(cat err)"; return; fi
    qemu-img create -q -f qcow2 "${args[@]}" "ref-$n.qcow2" "$s"
    qemu-img check -q "$n.qcow2" || { bad "create $n ($o)" "qemu-img check"; return; }
    qemu-img info --output=json "$n.qcow2" > a.json
    qemu-img info --output=json "ref-$n.qcow2" > b.json
    if ! python3 - <<'PY'
import json
a, b = json.load(open("a.json")), json.load(open("b.json"))
for k in ("actual-size", "filename"):
    a.pop(k, None); b.pop(k, None)
if a != b:
    print("ours:", a); print("qemu:", b); raise SystemExit(1)
PY
    then bad "create $n ($o)" "qemu-img info differs from qemu-img create's"; return; fi
    local w=(-c 'write -P 0x5a 0 64k' -c 'write -P 0xa5 1M 3M'
             -c 'write -z 2M 64k') r=(-c 'read -P 0xa5 1M 1M' -c 'read -P 0 2M 64k')
    if [ "$s" = 1000 ]; then w=(-c 'write -P 0x5a 0 1024'); r=(-c 'read -P 0x5a 0 1024'); fi
    if ! qemu-io "${w[@]}" "$n.qcow2" >/dev/null 2>&1 ||
       ! qemu-io "${r[@]}" "$n.qcow2" >/dev/null 2>&1; then
        bad "create $n ($o)" "qemu-io cannot write/read it"; return; fi
    qemu-img check -q "$n.qcow2" || { bad "create $n ($o)" "check after qemu-io"; return; }
    ok "create $n ($o, $s)"
}

same_info default "" 1G
same_info c512 cluster_size=512 64M
same_info c4k cluster_size=4k 1G
same_info c2m cluster_size=2M 4G
same_info rc1 refcount_bits=1 1G
same_info rc2 refcount_bits=2,cluster_size=4096 64M
same_info rc64 refcount_bits=64,cluster_size=512 64M
same_info v2 compat=0.10 1G
same_info v2c512 compat=0.10,cluster_size=512 16M
same_info zstd compression_type=zstd 1G
same_info xl2 extended_l2=on 1G
same_info xl2-16k extended_l2=on,cluster_size=16k 1G
same_info lazy lazy_refcounts=on 1G
same_info mix cluster_size=128k,refcount_bits=8,compression_type=zstd,lazy_refcounts=on 10G
same_info huge "" 16T
same_info odd "" 1000
same_info frac "" 1.5G

# refused options leave no file
refuse() { # expected-exit args...
    local want=$1; shift
    rm -f bad.qcow2
    "$C" "$@" >/dev/null 2>err; rc=$?
    if [ $rc -ne "$want" ]; then bad "refuse $*" "exit $rc, wanted $want: $(cat err)"
    elif [ -e bad.qcow2 ]; then bad "refuse $*" "left a file"
    elif ! grep -q '^qchain-create: ' err; then bad "refuse $*" "message: $(cat err)"
    else ok "refuse $* (exit $rc)"; fi
}
refuse 1 -o cluster_size=3000 bad.qcow2 1G
refuse 1 -o cluster_size=4M bad.qcow2 1G
refuse 1 -o refcount_bits=3 bad.qcow2 1G
refuse 1 -o compat=0.10,refcount_bits=8 bad.qcow2 1G
refuse 1 -o extended_l2=on,cluster_size=8k bad.qcow2 1G
refuse 1 -o compat=0.10,extended_l2=on bad.qcow2 1G
refuse 1 -o compat=0.10,compression_type=zstd bad.qcow2 1G
refuse 1 -o compat=0.10,lazy_refcounts=on bad.qcow2 1G
refuse 2 -o foo=1 bad.qcow2 1G
refuse 2 -o compat=2.0 bad.qcow2 1G
refuse 2 -o extended_l2=maybe bad.qcow2 1G
refuse 2 bad.qcow2 12Q
refuse 2 bad.qcow2
refuse 2 -f vmdk bad.qcow2 1G
refuse 1 -b missing.qcow2 -F qcow2 bad.qcow2
refuse 1 -b default.qcow2 bad.qcow2

# an existing file is never overwritten
cp default.qcow2 keep.qcow2; sum=$(md5sum < keep.qcow2)
"$C" keep.qcow2 1G >/dev/null 2>err; rc=$?
[ $rc -eq 1 ] && [ "$(md5sum < keep.qcow2)" = "$sum" ] \
    && ok "existing file refused and untouched" || bad "existing file" "exit $rc"

# raw, and sizes from the backing file
"$C" -f raw r.raw 10M >/dev/null && [ "$(stat -c %s r.raw)" = 10485760 ] \
    && [ "$(qemu-img info --output=json r.raw | python3 -c 'import json,sys; print(json.load(sys.stdin)["format"])')" = raw ] \
    && ok "raw create" || bad "raw create" "size or format"
qemu-img create -q -f qcow2 base.qcow2 3G
mkdir -p sub
"$C" -b ../base.qcow2 -F qcow2 sub/ovl.qcow2 >/dev/null 2>err \
    && qemu-img info --output=json sub/ovl.qcow2 > o.json \
    && [ "$(json_get o.json virtual-size)" = 3221225472 ] \
    && [ "$(json_get o.json backing-filename)" = '"../base.qcow2"' ] \
    && [ "$(json_get o.json backing-filename-format)" = '"qcow2"' ] \
    && [ "$(json_get o.json full-backing-filename)" = '"sub/../base.qcow2"' ] \
    && qemu-img check -q sub/ovl.qcow2 \
    && ok "overlay takes its size from the backing file" \
    || bad "overlay size from backing" "$(cat err) $(cat o.json 2>/dev/null)"
"$C" -b r.raw -F raw -o compat=0.10 v2ovl.qcow2 20M >/dev/null \
    && qemu-io -c 'write -P 3 15M 1M' v2ovl.qcow2 >/dev/null \
    && qemu-img check -q v2ovl.qcow2 \
    && ok "v2 overlay larger than its raw backing file" \
    || bad "v2 overlay" "check"
finish
