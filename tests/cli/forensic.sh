#!/bin/bash
# forensic.sh - the forensic views against qemu-img 7.2:
#  - qchain-map --all-layers: on chains where upper layers shadow lower
#    data, the entries at each depth are what `qemu-img map --output=json`
#    says of that layer opened alone ("backing": null), allocated ranges
#    only (forensic_compare.py layer); the human form lists the same
#    entries; --start-offset/--max-length clip every layer;
#  - qchain-export --layer N equals `qemu-img convert -O raw` of layer N
#    opened alone, byte for byte (a raw layer exports as itself);
#  - qchain-export --vmstate SNAP equals the VM state QEMU reads back for
#    snapshots built by vmstate_image.py (qemu-img check clean), with
#    exactly qemu-img info's vm-state-size bytes (0: an empty file);
#  - errors exit 1 (2 for usage) and leave no OUTPUT; the commands open
#    every file read-only and take read locks only (none with -U), seen
#    with strace; the images are unchanged afterwards.
. "$(dirname "$0")/lib.sh"
need_qemu
need_python

COMPARE="$CLI_DIR/forensic_compare.py"
VMSTATE_IMAGE="$CLI_DIR/vmstate_image.py"

# alone FILE FMT: a json: name that opens FILE without its backing file
alone() {
    if [ "$2" = raw ]; then
        printf 'json:{"driver":"raw","file":{"driver":"file","filename":"%s"}}' "$1"
    else
        printf 'json:{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"%s"}}' "$1"
    fi
}

# The chains.  Each CHAIN_x file lists its layers top first: "FILE FMT".
C=$TESTTMP/chains
mkdir -p "$C"
build_chains() {
    cd "$C" || return 1
    # a: qcow2 base (the fill pattern) <- mid (fill2, a compressed cluster)
    #    <- top (data, zero, compressed, discard over both)
    mk_q a-base.qcow2 4M || return 1
    qimg create -q -f qcow2 -b a-base.qcow2 -F qcow2 a-mid.qcow2 4M || return 1
    fill2 qcow2 a-mid.qcow2 4194304 131072 || return 1
    qio -c "write -c -P 0xb1 $((20 * 65536)) 64k" a-mid.qcow2 || return 1
    qimg create -q -f qcow2 -b a-mid.qcow2 -F qcow2 a-top.qcow2 4M || return 1
    qio -c "write -P 0xc1 0 64k" -c "write -z 128k 64k" \
        -c "write -c -P 0xc2 256k 64k" -c "discard 512k 64k" \
        -c "write -P 0xc3 $((20 * 65536 + 4096)) 4k" a-top.qcow2 || return 1
    printf '%s\n' "a-top.qcow2 qcow2" "a-mid.qcow2 qcow2" "a-base.qcow2 qcow2" > CHAIN_a
    # b: a raw base larger than its 4 KiB-cluster overlay, whose data
    #    shadows part of it
    rand_file b-base.raw 3145728 3 || return 1
    qimg create -q -f qcow2 -o cluster_size=4096 -b b-base.raw -F raw b-top.qcow2 2M || return 1
    qio -c "write -P 0xd1 4k 8k" -c "write -z 64k 64k" -c "write -P 0xd2 1M 512" b-top.qcow2 || return 1
    printf '%s\n' "b-top.qcow2 qcow2" "b-base.raw raw" > CHAIN_b
    # c: an extended-L2 base smaller than its v2 overlay
    qimg create -q -f qcow2 -o extended_l2=on,cluster_size=65536 c-base.qcow2 2M || return 1
    qio -c "write -P 0xe1 0 6k" -c "write -P 0xe2 64k 64k" -c "write -z 192k 2k" c-base.qcow2 || return 1
    qimg create -q -f qcow2 -o compat=0.10 -b c-base.qcow2 -F qcow2 c-top.qcow2 4M || return 1
    qio -c "write -P 0xe3 2k 2k" -c "write -P 0xe4 3M 64k" c-top.qcow2 || return 1
    printf '%s\n' "c-top.qcow2 qcow2" "c-base.qcow2 qcow2" > CHAIN_c
}
if ! (build_chains) > "$TESTTMP/build.log" 2>&1; then
    echo "not ok - build chains"; diag_file "$TESTTMP/build.log"; finish
fi

# map --all-layers at every depth vs qemu-img map of that layer alone
case_all_layers() {
    cd "$C" || return 1
    local chain=$1 top rc=0 d=0 file fmt
    shift
    top=$(head -n 1 "CHAIN_$chain" | cut -d' ' -f1)
    qc map --all-layers --output=json "$@" "$top"
    expect_rc 0 || return 1
    cp "$QC_OUT" all.json
    while read -r file fmt; do
        qimg map --output=json "$@" "$(alone "$file" "$fmt")" > ref.json || return 1
        if ! $PY "$COMPARE" layer ref.json all.json "$d" "$file" > cmp.log; then
            diag "$top --all-layers $*, depth $d ($file):"; diag_file cmp.log 30; rc=1
        fi
        d=$((d + 1))
    done < "CHAIN_$chain"
    # nothing past the last layer
    if $PY -c 'import json,sys; sys.exit(any(e["depth"] >= int(sys.argv[2]) for e in json.load(open(sys.argv[1]))))' all.json "$d"; then :; else
        diag "entries deeper than the chain"; rc=1
    fi
    qc map --all-layers "$@" "$top"
    expect_rc 0 || return 1
    cp "$QC_OUT" all.txt
    if ! $PY "$COMPARE" human all.json all.txt > cmp.log; then
        diag "human form:"; diag_file cmp.log 20; rc=1
    fi
    return $rc
}

# shadowed data exists in these chains: some range of a lower layer
# differs from what the top shows (else the views prove nothing)
case_shadowed() {
    cd "$C" || return 1
    local top=$1 file=$2 fmt=$3
    rm -f view.raw lay.raw
    qimg convert -O raw "$top" view.raw || return 1
    qimg convert -O raw "$(alone "$file" "$fmt")" lay.raw || return 1
    $PY -c '
import sys
a = open(sys.argv[1], "rb").read(); b = open(sys.argv[2], "rb").read()
n = min(len(a), len(b))
# a byte of the layer alone that is data (non-zero) and differs in the view
sys.exit(0 if any(b[i] and a[i] != b[i] for i in range(0, n, 512)) else 1)
' view.raw lay.raw || { diag "$file shows nothing the top hides"; return 1; }
}

# export --layer N vs qemu-img convert of layer N alone
case_layer() {
    cd "$C" || return 1
    local top=$1 depth=$2 file=$3 fmt=$4
    rm -f out.raw ref.raw
    qimg convert -O raw "$(alone "$file" "$fmt")" ref.raw || return 1
    qc export --layer "$depth" "$top" out.raw
    expect_rc 0 || return 1
    if [ -s "$QC_ERR" ]; then diag "unexpected stderr:"; diag_file "$QC_ERR"; return 1; fi
    expect_same_bytes ref.raw out.raw || return 1
    if [ "$fmt" = raw ]; then expect_same_bytes "$file" out.raw || return 1; fi
    # sparse: no more blocks than qemu-img's (also sparse) output + slack
    local a b
    a=$(stat -c %b ref.raw); b=$(stat -c %b out.raw)
    [ "$b" -le $((a + 64)) ] || { diag "out.raw has $b blocks, ref.raw $a"; return 1; }
    # --output=json names the layer
    rm -f out.raw
    qc export --layer "$depth" --output=json "$top" out.raw
    expect_rc 0 || return 1
    grep -q "\"layer-filename\": \"$file\"" "$QC_OUT" ||
        { diag "json report:"; diag_file "$QC_OUT"; return 1; }
}

for chain in a b c; do
    top=$(head -n 1 "$C/CHAIN_$chain" | cut -d' ' -f1)
    tcase "map --all-layers chain $chain" case_all_layers "$chain"
    tcase "map --all-layers chain $chain --start-offset 96k --max-length 1M" \
        case_all_layers "$chain" --start-offset 96k --max-length 1M
    tcase "map --all-layers chain $chain --start-offset 3M" \
        case_all_layers "$chain" --start-offset 3M
    d=0
    while read -r file fmt; do
        tcase "export --layer $d $top ($file)" case_layer "$top" "$d" "$file" "$fmt"
        if [ "$d" -gt 0 ]; then
            tcase "chain $chain: $file holds data the top hides" case_shadowed "$top" "$file" "$fmt"
        fi
        d=$((d + 1))
    done < "$C/CHAIN_$chain"
done

# --------------------------------------------------------------- VM state

V=$TESTTMP/vmstate
mkdir -p "$V"
for sc in c64k c4k v2 extl2 tiny; do
    if ! $PY "$VMSTATE_IMAGE" "$sc" "$V" > "$V/$sc.list" 2> "$V/$sc.log"; then
        echo "not ok - vmstate image $sc"; diag_file "$V/$sc.log"; N_FAIL=$((N_FAIL + 1))
        FAILED_CASES+=("vmstate image $sc")
        : > "$V/$sc.list"
    fi
done

# export --vmstate SNAP: the bytes QEMU reads back, qemu-img info's size
case_vmstate() {
    cd "$V" || return 1
    local sc=$1 snap=$2 size=$3 which=${4:-$2} want
    rm -f out.raw
    qc export --vmstate "$which" "$sc.qcow2" out.raw
    expect_rc 0 || return 1
    expect_same_bytes "$sc.$snap.vmstate" out.raw || return 1
    want=$("$QEMU_IMG" info --output=json "$sc.qcow2" | $PY -c '
import json, sys
print([s["vm-state-size"] for s in json.load(sys.stdin)["snapshots"] if s["name"] == sys.argv[1]][0])' "$snap")
    expect_eq "size of $snap's VM state (qemu-img info)" "$want" "$(stat -c %s out.raw)" || return 1
    expect_eq "size from vmstate_image.py" "$size" "$want" || return 1
    rm -f out.raw
    qc export --vmstate "$which" --output=json "$sc.qcow2" out.raw
    expect_rc 0 || return 1
    grep -q "\"vm-state-size\": $size" "$QC_OUT" || { diag_file "$QC_OUT"; return 1; }
}

# the snapshot's guest view is untouched by its VM state
case_vm_snapshot_view() {
    cd "$V" || return 1
    cmp_export_snapshot "$1.qcow2" "$2"
}

for sc in c64k c4k v2 extl2 tiny; do
    while read -r snap size vmoff; do
        tcase "export --vmstate $snap $sc ($size bytes at $vmoff)" case_vmstate "$sc" "$snap" "$size"
        tcase "export -s $snap $sc (guest view)" case_vm_snapshot_view "$sc" "$snap"
    done < "$V/$sc.list"
done
tcase "export --vmstate by id (c64k, id 2 = vm2)" case_vmstate c64k vm2 204800 2
case_vm_info() { cd "$V" && cmp_info c64k.qcow2; }
tcase "info of the VM state image agrees with qemu-img info" case_vm_info

# ----------------------------------------------------------------- errors

case_errors() {
    cd "$C" || return 1
    local rc=0
    rm -f out.raw
    qc export --layer 3 a-top.qcow2 out.raw
    expect_failure export a-top.qcow2 || rc=1
    expect_stderr_match "no layer at depth 3" || rc=1
    [ -e out.raw ] && { diag "out.raw left behind"; rc=1; }
    qc export --vmstate nosuch a-top.qcow2 out.raw
    expect_failure export a-top.qcow2 || rc=1
    expect_stderr_match "snapshot 'nosuch' not found" || rc=1
    qc export --vmstate 1 b-base.raw out.raw
    expect_failure export b-base.raw || rc=1
    [ -e out.raw ] && { diag "out.raw left behind"; rc=1; }
    qc export --layer x a-top.qcow2 out.raw; expect_rc 2 || rc=1
    qc export --layer 1 -s snap a-top.qcow2 out.raw; expect_rc 2 || rc=1
    qc export --layer 1 --vmstate s a-top.qcow2 out.raw; expect_rc 2 || rc=1
    echo keep > exists.raw
    qc export --layer 1 a-top.qcow2 exists.raw
    expect_failure export exists.raw || rc=1
    expect_eq "existing OUTPUT" keep "$(cat exists.raw)" || rc=1
    return $rc
}
tcase "errors: no such layer or snapshot, bad usage, OUTPUT exists" case_errors

# ------------------------------------------------------- read-only, locks

# strace_check LOG [-U]: in `strace -e trace=openat,fcntl` output, every
# image (a file named *.qcow2 or *-base.raw; OUTPUT files are out*.raw) is
# opened O_RDONLY, and the locks set on its descriptors are read locks
# (the F_OFD_GETLK probes ask with a write lock and set nothing); with -U
# none at all
strace_check() {
    $PY - "$@" <<'PYEOF'
import re, sys
log, force = sys.argv[1], len(sys.argv) > 2
images, bad, locks = {}, [], 0
for line in open(log):
    m = re.search(r'openat\(AT_FDCWD, "([^"]+)", ([A-Z_|]+).*\) = (\d+)$', line)
    if m and re.search(r'(\.qcow2|-base\.raw)$', m.group(1)):
        images[m.group(3)] = m.group(1)
        if "O_RDONLY" not in m.group(2) or re.search("O_RDWR|O_WRONLY|O_CREAT", m.group(2)):
            bad.append("opened for writing: " + line.strip())
        continue
    m = re.search(r'fcntl\((\d+), (F_\w+), \{l_type=(F_\w+)', line)
    if m and m.group(1) in images:
        if m.group(2) in ("F_SETLK", "F_SETLKW", "F_OFD_SETLKW") or \
           (m.group(2) == "F_OFD_SETLK" and m.group(3) != "F_RDLCK" and m.group(3) != "F_UNLCK"):
            bad.append("not a read lock: " + line.strip())
        if m.group(2) == "F_OFD_SETLK" and m.group(3) == "F_RDLCK":
            locks += 1
            if force:
                bad.append("a lock with -U: " + line.strip())
if not images:
    bad.append("no image opened in " + log)
for b in bad:
    print("# " + b)
print("# %d image files, %d read locks" % (len(images), locks))
sys.exit(1 if bad else 0)
PYEOF
}

case_read_only() {
    cd "$C" || return 1
    command -v strace > /dev/null || { diag "strace missing: skipped"; return 0; }
    strace -o /dev/null true 2> /dev/null || { diag "strace cannot trace here: skipped"; return 0; }
    local before after rc=0
    # (LeakSanitizer cannot run under ptrace: sanitizer builds skip it)
    before=$(sha256sum a-*.qcow2 b-* c-*.qcow2 "$V"/c64k.qcow2)
    rm -f out*.raw
    ASAN_OPTIONS=detect_leaks=0 strace -f -e trace=openat,fcntl -o t1.log "$QCHAIN_BIN/qchain-map" --all-layers a-top.qcow2 > /dev/null || rc=1
    ASAN_OPTIONS=detect_leaks=0 strace -f -e trace=openat,fcntl -o t2.log "$QCHAIN_BIN/qchain-export" --layer 2 a-top.qcow2 out1.raw || rc=1
    ASAN_OPTIONS=detect_leaks=0 strace -f -e trace=openat,fcntl -o t3.log "$QCHAIN_BIN/qchain-export" --vmstate vm1 "$V/c64k.qcow2" out2.raw || rc=1
    ASAN_OPTIONS=detect_leaks=0 strace -f -e trace=openat,fcntl -o t4.log "$QCHAIN_BIN/qchain-export" --layer 1 b-top.qcow2 out3.raw || rc=1
    for l in t1.log t2.log t3.log t4.log; do strace_check "$l" > "$l.chk" || { diag_file "$l.chk"; rc=1; }; done
    # read locks on every layer: 3 per file (bytes 100, 201, 203)
    expect_eq "map --all-layers on 3 layers" "# 3 image files, 9 read locks" "$(cat t1.log.chk)" || rc=1
    # -U: no lock at all
    rm -f out*.raw
    ASAN_OPTIONS=detect_leaks=0 strace -f -e trace=openat,fcntl -o u1.log "$QCHAIN_BIN/qchain-map" -U --all-layers a-top.qcow2 > /dev/null || rc=1
    ASAN_OPTIONS=detect_leaks=0 strace -f -e trace=openat,fcntl -o u2.log "$QCHAIN_BIN/qchain-export" -U --layer 2 a-top.qcow2 out1.raw || rc=1
    ASAN_OPTIONS=detect_leaks=0 strace -f -e trace=openat,fcntl -o u3.log "$QCHAIN_BIN/qchain-export" -U --vmstate vm1 "$V/c64k.qcow2" out2.raw || rc=1
    for l in u1.log u2.log u3.log; do
        strace_check "$l" -U > "$l.chk" || { diag_file "$l.chk"; rc=1; }
    done
    after=$(sha256sum a-*.qcow2 b-* c-*.qcow2 "$V"/c64k.qcow2)
    expect_eq "image hashes before and after" "$before" "$after" || rc=1
    return $rc
}
tcase "forensic commands open read-only, read locks only, none with -U" case_read_only

# a writer holding the top: refused ("in use"); -U reads; a read-only
# holder blocks nothing
HOLDER_LOG=$TESTTMP/holder.log
trap 'release; cleanup' EXIT
case_locks() {
    cd "$V" || return 1
    cp c64k.qcow2 held.qcow2 || return 1
    local rc=0
    hold held.qcow2 || { diag "holder did not stop"; return 1; }
    rm -f out.raw
    qc map --all-layers held.qcow2; expect_failure map held.qcow2 || rc=1
    expect_stderr_match "in use" || rc=1
    qc export --vmstate vm1 held.qcow2 out.raw; expect_failure export held.qcow2 || rc=1
    qc export --layer 0 held.qcow2 out.raw; expect_failure export held.qcow2 || rc=1
    [ -e out.raw ] && { diag "out.raw left behind"; rc=1; }
    qc map -U --all-layers held.qcow2; expect_rc 0 || rc=1
    qc export -U --vmstate vm1 held.qcow2 out.raw; expect_rc 0 || rc=1
    expect_same_bytes c64k.vm1.vmstate out.raw || rc=1
    release
    hold -r held.qcow2 || { diag "read-only holder did not stop"; return 1; }
    rm -f out.raw
    qc map --all-layers held.qcow2; expect_rc 0 || rc=1
    qc export --vmstate vm1 held.qcow2 out.raw; expect_rc 0 || rc=1
    release
    return $rc
}
tcase "locks: a writer blocks the forensic views, -U and readers do not" case_locks

finish
