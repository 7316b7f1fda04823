#!/bin/bash
# check.sh - qchain-check against qemu-img check: the JSON counters (keys,
# order, values) and the exit code agree on every image of the matrix, and
# on images damaged by byte pokes; leaked-ranges names exactly the leaked
# clusters; after -r leaks / -r all qemu-img check finds the image clean and
# the guest view is unchanged; without -r nothing is written.
. "$(dirname "$0")/lib.sh"
need_qemu
need_python

CMP="$PY $CLI_DIR/check_compare.py"
M=$TESTTMP/matrix
matrix_prepare "$M" || { echo "not ok - matrix build"; exit 1; }

# cmp_check IMAGE [ARGS...]: both tools, same exit code and counters.
cmp_check() {
    local img=$1 qrc
    shift
    "$QEMU_IMG" check --output=json "$@" "$img" > check.ref 2> check.ref.err
    qrc=$?
    qc check --output=json "$@" "$img"
    cp "$QC_OUT" check.out
    if [ "$QC_RC" -ne "$qrc" ]; then
        diag "exit code: qemu-img check $qrc, qchain-check $QC_RC"
        diag "qemu-img stderr:"; diag_file check.ref.err 10
        diag "qchain stderr:"; diag_file "$QC_ERR" 10
        return 1
    fi
    expect_clean || return 1
    if [ -s check.ref ]; then
        $PY "$CLI_DIR/check_compare.py" check.ref check.out > check.diff 2>&1 ||
            { diag "check $* $img disagrees with qemu-img:"; diag_file check.diff; return 1; }
    fi
    return 0
}

case_matrix() {
    cd "$M" || return 1
    local img=$1 before after
    before=$(md5sum "$img")
    cmp_check "$img" || return 1
    after=$(md5sum "$img")
    expect_eq "image bytes after a check without -r" "$before" "$after"
}

while read -r name file snaps; do
    case $file in *.img) continue ;; esac # raw: qemu-img's 63, see below
    tcase "check json $name" case_matrix "$file"
done < "$M/MATRIX"

case_raw() {
    cd "$M" || return 1
    qc check raw.img
    expect_rc 63
}
tcase "check raw image exits 63" case_raw

# ------------------------------------------------------------ damage

# poke FILE rc CLUSTER EXPR | l2 GUEST_CLUSTER EXPR | l1 INDEX EXPR
# (16-bit refcounts; v the old value, L1(i) the L1 table's entry i)
poke() {
    $PY - "$@" <<'PYEOF'
import struct, sys
f = open(sys.argv[1], "r+b")
h = f.read(104)
cs = 1 << struct.unpack(">I", h[20:24])[0]
l1 = struct.unpack(">Q", h[40:48])[0]
rt = struct.unpack(">Q", h[48:56])[0]
op, idx, expr = sys.argv[2], int(sys.argv[3], 0), sys.argv[4]
def L1(i):
    f.seek(l1 + 8 * i); return struct.unpack(">Q", f.read(8))[0]
def rw(off, fmt):
    f.seek(off); v = struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
    new = struct.pack(fmt, eval(expr, {"v": v, "L1": L1}))  # L1() seeks
    f.seek(off); f.write(new)
if op == "rc":
    per = cs * 8 // 16
    f.seek(rt + 8 * (idx // per)); rb = struct.unpack(">Q", f.read(8))[0]
    rw(rb + 2 * (idx % per), ">H")
elif op == "l1":
    rw(l1 + 8 * idx, ">Q")
elif op == "l2":
    n = cs // 8
    f.seek(l1 + 8 * (idx // n)); l2 = struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00
    rw(l2 + 8 * (idx % n), ">Q")
PYEOF
}

# A 64k-cluster image: clusters 0 header, 1 reftable, 2 refblock, 3 L1,
# 4 L2, then data (guest clusters 0..7 at host clusters 5..12), a
# compressed cluster, and a snapshot.
mk_base() {
    qimg create -q -f qcow2 -o cluster_size=64k base.qcow2 64M &&
        qio -f qcow2 -c "write -P 0x11 0 512k" -c "write -c -P 0x22 4M 64k" \
            -c "write -P 0x33 8M 64k" base.qcow2
}

# damage NAME SETUP...: a damaged copy; both tools agree read-only, and
# with -r leaks and -r all (qemu-img on its own copy; after our repair
# qemu-img check must agree with our final verdict, and exit 0 when ours
# does).  Leaked ranges must equal LEAKED (offset:length list) if set.
damage_case() {
    local name=$1 leaked=$2 setup=$3 m qrc
    cd "$(casedir "dmg-$name")" || return 1
    ${DAMAGE_BASE:-mk_base} || return 1
    cp base.qcow2 img.qcow2
    eval "$setup" || { diag "setup failed"; return 1; }
    qimg convert -O raw img.qcow2 guest.before 2>/dev/null || rm -f guest.before
    cmp_check img.qcow2 || return 1
    if [ -n "$leaked" ] || grep -q '"leaked-ranges": \[$' check.out; then
        local got
        got=$($PY -c '
import json, sys
print(" ".join("%d:%d" % (r["offset"], r["length"]) for r in json.load(open(sys.argv[1]))["leaked-ranges"]))' check.out)
        expect_eq "leaked-ranges" "$leaked" "$got" || return 1
    fi
    for m in leaks all; do
        cp img.qcow2 q.qcow2
        cp img.qcow2 c.qcow2
        "$QEMU_IMG" check -r $m --output=json q.qcow2 > rep.ref 2> /dev/null
        qrc=$?
        qc check -r $m --output=json c.qcow2
        expect_clean || return 1
        sed -i 's/"q.qcow2"/"c.qcow2"/' rep.ref
        if [ "$m" = leaks ] || [ "$qrc" -eq 0 ]; then
            # where qemu-img repairs everything (or -r leaks), the same
            # verdict and counters
            if [ "$QC_RC" -ne "$qrc" ]; then
                diag "-r $m: qemu-img exit $qrc, qchain-check $QC_RC"; diag_file "$QC_ERR"; return 1
            fi
            if [ -s rep.ref ]; then
                cp "$QC_OUT" rep.out
                $PY "$CLI_DIR/check_compare.py" rep.ref rep.out > rep.diff 2>&1 ||
                    { diag "-r $m disagrees with qemu-img:"; diag_file rep.diff; return 1; }
            fi
        fi
        "$QEMU_IMG" check c.qcow2 > after.txt 2>&1
        local arc=$?
        if [ "$QC_RC" -eq 0 ] && [ "$arc" -ne 0 ]; then
            diag "-r $m: qchain-check said clean, qemu-img check exits $arc:"; diag_file after.txt; return 1
        fi
        if [ "$m" = all ] && [ "$arc" -ne 0 ] && [ "${EXPECT_UNFIXABLE:-}" != "$name" ]; then
            diag "-r all left the image unclean for qemu-img ($arc):"; diag_file after.txt; return 1
        fi
        if [ -e guest.before ] && [ "$QC_RC" -eq 0 ]; then
            qimg convert -O raw c.qcow2 guest.after || return 1
            expect_same_bytes guest.before guest.after || { diag "-r $m changed the guest view"; return 1; }
        fi
    done
    return 0
}

# leaked clusters: refcounts of two unused clusters past the data, and a
# data cluster counted twice (a leak too, but still referenced)
tcase "damage leaked clusters" damage_case leaks "1900544:131072" \
    'poke img.qcow2 rc 29 1 && poke img.qcow2 rc 30 1 && poke img.qcow2 rc 5 "v+1" &&
     truncate -s $((31 * 65536)) img.qcow2'
# the refcount of the live L2 table dropped to zero (needs a rebuild)
tcase "damage refcount zero under a live L2 table" damage_case l2-rc0 "" \
    'poke img.qcow2 rc 4 0'
# two L2 entries share one data cluster (guest cluster 1 points at 0's);
# guest cluster 1's old cluster leaks
tcase "damage two entries share a data cluster" damage_case shared "393216:65536" \
    'poke img.qcow2 l2 1 "(v & ~0x00fffffffffffe00) | 0x50000"'
# an L2 entry past the end of the file (its cluster leaks)
tcase "damage entry past the end of the file" damage_case past-eof "393216:65536" \
    'poke img.qcow2 l2 1 "(v & ~0x00fffffffffffe00) | (1000 << 16)"'
# an L1 entry past the end of the file (the L2 table it named and all the
# data under it leak: clusters 4..14)
tcase "damage L1 entry past the end of the file" damage_case l1-past-eof "262144:720896" \
    'poke img.qcow2 l1 0 "(v & ~0x00fffffffffffe00) | (1000 << 16)"'
# COPIED cleared on a data cluster, set on the L1 entry of a shared table
tcase "damage bad COPIED flags" damage_case copied "" \
    'poke img.qcow2 l2 2 "v & ~(1 << 63)"'
# the snapshot table: a snapshot's L1 table moved off its cluster
# boundary; the snapshot's own L1 table (cluster 15) is then referenced by
# nothing.  Neither tool repairs it: qemu-img check -r all and ours fix the
# leak but leave the misplaced L1 offset, so both still report a corruption
# (EXPECT_UNFIXABLE lets -r all end unclean for this case only)
EXPECT_UNFIXABLE=snapshot
tcase "damage broken snapshot table" damage_case snapshot "983040:65536" \
    'qimg snapshot -c s1 img.qcow2 &&
     off=$("$QEMU_IMG" info --output=json img.qcow2 >/dev/null; $PY -c "
import struct; h=open(\"img.qcow2\",\"rb\").read(72); print(struct.unpack(\">Q\", h[64:72])[0])") &&
     hpoke img.qcow2 "$off" Q "v + 512"'
EXPECT_UNFIXABLE=
# Shared tables: a table named again is walked once more at the end with
# the number of further references as its weight (check.c); the counters
# must be those of one walk per reference, as qemu-img's.
# A 16 MiB image of 4 KiB clusters (8 L1 entries of 2 MiB) whose L1
# entries 1..7 all name entry 0's L2 table: 8 references to the table and
# to each data and compressed cluster under it, each with refcount 1; guest
# cluster 3's COPIED flag cleared (found once per reference).
mk_shared_l2() {
    qimg create -q -f qcow2 -o cluster_size=4k base.qcow2 16M &&
        qio -f qcow2 -c "write -P 0x11 0 512k" -c "write -c -P 0x22 1M 64k" \
            -c "write -P 0x33 1536k 64k" base.qcow2
}
DAMAGE_BASE=mk_shared_l2
tcase "damage one L2 table named by 8 L1 entries" damage_case l2-named-8 "" \
    'poke img.qcow2 l2 3 "v & ~(1 << 63)" &&
     for i in 1 2 3 4 5 6 7; do poke img.qcow2 l1 $i "L1(0)" || return 1; done'
DAMAGE_BASE=
# Three internal snapshots, the second's and the third's L1 offsets pointed
# at the first's: its L1 table has 3 references and refcount 1, the other
# two L1 tables (clusters 16 and 17) leak.
snap_l1_same() {
    qimg snapshot -c s1 img.qcow2 && qimg snapshot -c s2 img.qcow2 &&
        qimg snapshot -c s3 img.qcow2 && $PY - img.qcow2 <<'PYEOF'
import struct, sys
f = open(sys.argv[1], "r+b")
h = f.read(72)
n, pos = struct.unpack(">I", h[60:64])[0], struct.unpack(">Q", h[64:72])[0]
offs = []
for _ in range(n):
    pos = (pos + 7) & ~7
    f.seek(pos)
    fx = f.read(40)
    offs.append(pos)
    idl, nml, extra = struct.unpack(">HHI", fx[12:16] + fx[36:40])
    pos += 40 + extra + idl + nml
f.seek(offs[0]); first = f.read(8)
for p in offs[1:]:
    f.seek(p); f.write(first)
PYEOF
}
tcase "damage three snapshots name one L1 table" damage_case snap-l1-same \
    "1048576:131072" snap_l1_same
# ------------------------------------------------------------ snapshot tables

# Broken snapshot tables QEMU's check opens and -r all repairs (iotest 261;
# snaptable.py makes them).  Both tools read-only and with -r leaks / -r all
# (each on its own copy): the same exit code and, where qemu-img prints
# them, the same counters; after our -r all qemu-img check finds the image
# clean, the header keeps as many snapshots as qemu-img's repair kept, and
# the guest view and the views of the snapshots made before the damage are
# unchanged (taken from the undamaged image: qemu-img cannot open some of
# the damaged ones).
mk_snap_base() {
    qimg create -q -f qcow2 -o cluster_size=64k base.qcow2 64M &&
        qio -f qcow2 -c "write -P 0x11 0 512k" base.qcow2 &&
        qimg snapshot -c s1 base.qcow2 &&
        qio -f qcow2 -c "write -P 0x22 64k 128k" base.qcow2 &&
        qimg snapshot -c s2 base.qcow2 &&
        qio -f qcow2 -c "write -P 0x33 1M 64k" base.qcow2
}

nb_snapshots() {
    $PY -c 'import struct,sys; print(struct.unpack(">I", open(sys.argv[1],"rb").read(64)[60:64])[0])' "$1"
}

snap_case() {
    local mode=$1 m qrc arc s
    shift
    cd "$(casedir "snap-$mode")" || return 1
    mk_snap_base || return 1
    cp base.qcow2 img.qcow2
    $PY "$CLI_DIR/snaptable.py" "$mode" img.qcow2 "$@" || { diag "snaptable.py failed"; return 1; }
    qimg convert -O raw base.qcow2 guest.before || return 1
    for s in s1 s2; do qimg convert -l "$s" -O raw base.qcow2 "$s.before" || return 1; done
    cmp_check img.qcow2 || return 1
    for m in leaks all; do
        cp img.qcow2 q.qcow2
        cp img.qcow2 c.qcow2
        "$QEMU_IMG" check -r $m --output=json q.qcow2 > rep.ref 2> rep.ref.err
        qrc=$?
        qc check -r $m --output=json c.qcow2
        expect_clean || return 1
        if [ "$QC_RC" -ne "$qrc" ]; then
            diag "-r $m: qemu-img exit $qrc, qchain-check $QC_RC"; diag_file rep.ref.err; diag_file "$QC_ERR"; return 1
        fi
        if [ -s rep.ref ]; then
            sed -i 's/"q.qcow2"/"c.qcow2"/' rep.ref
            cp "$QC_OUT" rep.out
            $PY "$CLI_DIR/check_compare.py" rep.ref rep.out > rep.diff 2>&1 ||
                { diag "-r $m disagrees with qemu-img:"; diag_file rep.diff; return 1; }
        elif [ -s "$QC_OUT" ]; then
            diag "-r $m: qemu-img printed no result, qchain-check did:"; diag_file "$QC_OUT"; return 1
        fi
    done
    # after -r all (the last round)
    "$QEMU_IMG" check c.qcow2 > after.txt 2>&1
    arc=$?
    [ "$arc" -eq 0 ] || { diag "after -r all qemu-img check exits $arc:"; diag_file after.txt; return 1; }
    expect_eq "snapshots kept (qemu-img's repair, ours)" "$(nb_snapshots q.qcow2)" "$(nb_snapshots c.qcow2)" || return 1
    qimg convert -O raw c.qcow2 guest.after || return 1
    expect_same_bytes guest.before guest.after || { diag "-r all changed the guest view"; return 1; }
    for s in s1 s2; do
        qimg convert -l "$s" -O raw c.qcow2 "$s.after" || return 1
        expect_same_bytes "$s.before" "$s.after" || { diag "-r all changed snapshot $s"; return 1; }
    done
    qc check c.qcow2
    expect_rc 0
}
tcase "snapshot table: version 3 entries with incomplete extra data" snap_case incomplete
tcase "snapshot table: more than 65536 snapshots" snap_case too-many 65540
tcase "snapshot table: larger than 64 MiB" snap_case too-big
# A missing backing file: qemu-img check cannot open the overlay by its
# name ("Could not open backing file", exit 1), but checks it opened with
# "backing": null (exit 0); the check reads only the image's own
# structure, so qchain-check checks it by itself, with a warning naming
# the missing file, with and without -r; with the backing file back, both
# find the overlay clean.
case_missing_backing() {
    local m qrc
    cd "$(casedir missing-backing)" || return 1
    qimg create -q -f qcow2 b.qcow2 1M &&
        qimg create -q -f qcow2 -b b.qcow2 -F qcow2 o.qcow2 || return 1
    cmp_check o.qcow2 || return 1
    expect_rc 0 || return 1
    mv b.qcow2 gone.qcow2
    for m in "" "-r leaks" "-r all"; do
        # shellcheck disable=SC2086
        "$QEMU_IMG" check --output=json $m \
            'json:{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"o.qcow2"}}' \
            > check.ref 2> check.ref.err
        qrc=$?
        # shellcheck disable=SC2086
        qc check --output=json $m o.qcow2
        expect_rc "$qrc" || return 1
        expect_rc 0 || return 1
        expect_stderr_match "^qchain-check: warning: .*b\.qcow2" || return 1
        cp "$QC_OUT" check.out
        # qemu-img names the image by its json: name
        $PY -c 'import json,sys; r=json.load(open(sys.argv[1])); r["filename"]="o.qcow2"; json.dump(r, open(sys.argv[1], "w"))' check.ref || return 1
        $PY "$CLI_DIR/check_compare.py" check.ref check.out > check.diff 2>&1 ||
            { diag "check $m disagrees with qemu-img:"; diag_file check.diff; return 1; }
    done
    mv gone.qcow2 b.qcow2
    cmp_check o.qcow2 || return 1
    expect_rc 0
}
tcase "check: missing backing file is a warning (qemu-img check of backing: null)" case_missing_backing
# ------------------------------------------------------------ locks

# A stopped qemu-io holding the image (read-write, or read-only with -r):
# hold and release (tests/holder.sh)
HOLDER_LOG=holder.log

# check takes only read locks (none with -U): a writer blocks it, -U
# reads past the writer; a read-only holder lets a check run but not a
# repair (-r leaks needs the write lock); with nobody holding, -r leaks
# runs and its fcntl calls take QEMU's writer bytes 100, 101, 103.
case_locks() {
    cd "$(casedir locks)" || return 1
    mk_base || return 1
    hold base.qcow2 || return 1
    qc check base.qcow2
    expect_rc 1 || return 1
    expect_stderr_match "in use|lock" || return 1
    qc check -U base.qcow2
    expect_rc 0 || return 1
    qc check -r leaks base.qcow2
    expect_rc 1 || return 1
    release
    hold -r base.qcow2 || return 1
    qc check base.qcow2
    expect_rc 0 || return 1
    qc check -r leaks base.qcow2
    expect_rc 1 || return 1
    expect_stderr_match "in use|lock" || return 1
    release
    if command -v strace > /dev/null; then
        ASAN_OPTIONS=detect_leaks=0 strace -f -e trace=fcntl -o trace.rw "$QCHAIN_BIN/qchain-check" -r all base.qcow2 > /dev/null 2>&1 ||
            { diag "qchain-check -r all failed"; return 1; }
        ASAN_OPTIONS=detect_leaks=0 strace -f -e trace=fcntl -o trace.ro "$QCHAIN_BIN/qchain-check" base.qcow2 > /dev/null 2>&1 ||
            { diag "qchain-check failed"; return 1; }
        ASAN_OPTIONS=detect_leaks=0 strace -f -e trace=fcntl -o trace.u "$QCHAIN_BIN/qchain-check" -U base.qcow2 > /dev/null 2>&1 ||
            { diag "qchain-check -U failed"; return 1; }
        local b got
        for b in 100 101 103 201 203; do
            grep -qE "F_OFD_SETLK.*F_RDLCK.*l_start=$b," trace.rw ||
                { diag "-r all took no lock on byte $b:"; diag_file trace.rw 20; return 1; }
        done
        got=$(grep -E "F_OFD_SETLK.*F_RDLCK" trace.ro | grep -oE "l_start=[0-9]+" | sort -u | tr '\n' ' ')
        expect_eq "bytes a plain check locks" "l_start=100 l_start=201 l_start=203 " "$got" || return 1
        if grep -qE "F_OFD_SETLK.*F_RDLCK" trace.u; then
            diag "check -U took locks:"; diag_file trace.u 10; return 1
        fi
    fi
    return 0
}
tcase "check: read locks only (none with -U), -r takes the write lock" case_locks
finish
