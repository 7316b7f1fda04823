#!/usr/bin/env bash
# Power loss, proven (issue 15; qchain-rebase: issue 17): each command is run once under strace
# (crash.py record), then many power-loss states of its directory are made
# from the system calls (crash.py states: every sync point with seeds 0 =
# only what was made durable and 1 = everything so far, what SIGKILL
# leaves, then random subsets with torn multi-sector writes), and each
# state is held against qemu-img:
#   - every image the chain names opens and `qemu-img check` finds no
#     corruption (leaks allowed); the guest view through the active image
#     is the one before the command (commit, check -r, rebase); a new file
#     (create, snapshot overlays, export output) is absent or complete;
#   - at the end of the run (the command had exited 0) with seed 0, the
#     command's result is there: success means durable;
#   - the same command re-run on the state completes it (exit 0; commit
#     may say "had already completed"), after which `qemu-img check`
#     reports no leaks, the guest view is right, and a commit's base holds
#     the committed content.
# CRASH_STATES caps the states per scenario (default 50; 30 for rebase);
# CRASH_ONLY runs the scenarios whose name contains it.  A failing state is kept (its
# directory is printed) with the point, seed and what failed.
. "$(dirname "$0")/../write/lib.sh"
command -v strace >/dev/null || { echo "strace not installed: skipped"; exit 77; }
CRASH=(python3 "$(cd "$(dirname "$0")" && pwd)/crash.py")
B=$QCHAIN_BIN
MAX=${CRASH_STATES:-50}
keep=""   # where failing states are kept (made on the first failure)

fmt_of() { qemu-img info -U --output=json "$1" 2>/dev/null | python3 -c \
    'import json,sys; print(json.load(sys.stdin)["format"])' 2>/dev/null; }

# chain_ok ACTIVE [strict]: every image of ACTIVE's chain opens, qemu-img
# check finds no corruption (exit 0; 3 = leaks only, unless strict)
chain_ok() {
    local f rc files
    files=$(qemu-img info -U --backing-chain --output=json "$1" 2>/dev/null |
        python3 -c 'import json,sys
d=json.load(sys.stdin); d=d if isinstance(d,list) else [d]
print("\n".join(x["filename"]+"\t"+x["format"] for x in d))' 2>/dev/null) ||
        { why="qemu-img info --backing-chain $1 fails: $(qemu-img info -U --backing-chain "$1" 2>&1 | tail -1)"; return 1; }
    [ -n "$files" ] || { why="qemu-img info $1 fails"; return 1; }
    while IFS=$'\t' read -r f fm; do
        [ "$fm" = qcow2 ] || continue
        qemu-img check -U -q "$f" >/dev/null 2>&1; rc=$?
        if [ $rc -ne 0 ] && { [ $rc -ne 3 ] || [ -n "${2:-}" ]; }; then
            why="qemu-img check $f exits $rc: $(qemu-img check -U "$f" 2>&1 | grep -v '^$' | head -3 | tr '\n' ' ')"
            return 1
        fi
    done <<< "$files"
}

# view_is RAW IMAGE: the guest view through IMAGE equals RAW
view_is() {
    qemu-img compare -U -q -f raw "$1" "$2" >/dev/null 2>&1 ||
        { why="the guest view through $2 differs from $(basename "$1")"; return 1; }
}

# complete NEW FINAL: the new image NEW matches FINAL (the file the
# recorded run made): check clean, same format, size, backing, content
complete() {
    local a b
    [ -s "$1" ] || { why="$1 is empty"; return 1; }
    a=$(qemu-img info -U --output=json "$1" 2>/dev/null | python3 -c 'import json,sys
d=json.load(sys.stdin); print(d["format"], d["virtual-size"], d.get("backing-filename"), d.get("cluster-size"))' 2>/dev/null) ||
        { why="$1 does not open: $(qemu-img info -U "$1" 2>&1 | tail -1)"; return 1; }
    b=$(qemu-img info -U --output=json "$2" | python3 -c 'import json,sys
d=json.load(sys.stdin); print(d["format"], d["virtual-size"], d.get("backing-filename"), d.get("cluster-size"))')
    [ "$a" = "$b" ] || { why="$1 is incomplete: info '$a', expected '$b'"; return 1; }
    if [ "${a%% *}" = qcow2 ]; then
        qemu-img check -U -q "$1" >/dev/null 2>&1 ||
            { why="$1 is incomplete: qemu-img check exits $?"; return 1; }
    fi
    qemu-img compare -U -q "$2" "$1" >/dev/null 2>&1 ||
        { why="$1 is incomplete: guest view differs"; return 1; }
}

# --- per scenario: setup (in $W, references in $R), CMD, then the checks.
# Kinds: new (files in NEWS appear), export (OUT appears), commit, repair.
NEWS=(); OUT=""; ACTIVE=""; BASE=""; TOPREF=""

state_check() { # kind, in the state's directory; at the end with seed 0, strict
    local end=$1 f present=0
    incomplete=0
    case $kind in
    new|export)
        for f in "${NEWS[@]}"; do
            if [ -e "$f" ]; then
                present=$((present+1))
                if [ $kind = export ]; then
                    cmp -s "$f" "$FINAL/$f" || { incomplete=1; why="$f exists, not byte-identical to the expected raw ($(stat -c %s "$f") bytes)"; return 1; }
                else
                    complete "$f" "$FINAL/$f" || { incomplete=1; return 1; }
                fi
            elif [ "$end" = 1 ]; then
                why="the command had exited 0, but $f is lost"; return 1
            fi
        done
        for f in "${OLDS[@]}"; do chain_ok "$f" || return 1; done ;;
    commit|repair|rebase)
        chain_ok "$ACTIVE" || return 1
        view_is "$R/before.raw" "$ACTIVE" || return 1 ;;
    esac
}

rerun_check() { # after state_check passed
    local f present=0 rc
    case $kind in
    new|export)
        for f in "${NEWS[@]}"; do [ -e "$f" ] && present=$((present+1)); done
        # complete: nothing to redo; an incomplete file stays (the re-run
        # must cope with what the crash left)
        [ $present -eq ${#NEWS[@]} ] && [ $incomplete = 0 ] && return 0
        # some overlays of a multi-disk snapshot named, others not: the
        # re-run takes the named ones (exactly what it would make) as made
        if [ $present -ne 0 ] && [ $incomplete = 0 ]; then
            note="partial set ($present of ${#NEWS[@]}), re-run completed it"
        fi
        "${CMD[@]}" >rerun.out 2>&1; rc=$?
        [ $rc -eq 0 ] || { why="re-run exits $rc: $(tail -2 rerun.out | tr '\n' ' ')"; return 1; }
        for f in "${NEWS[@]}"; do
            if [ $kind = export ]; then
                cmp -s "$f" "$FINAL/$f" || { why="re-run: $f differs"; return 1; }
            else
                complete "$f" "$FINAL/$f" || { why="re-run: $why"; return 1; }
            fi
        done ;;
    commit|repair|rebase)
        "${CMD[@]}" >rerun.out 2>&1; rc=$?
        if [ $kind = repair ]; then
            [ $rc -eq 0 ] || { why="re-run exits $rc: $(tail -2 rerun.out | tr '\n' ' ')"; return 1; }
        else
            [ $rc -eq 0 ] || { why="re-run exits $rc: $(tail -2 rerun.out | tr '\n' ' ')"; return 1; }
        fi
        chain_ok "$ACTIVE" strict || { why="after the re-run: $why"; return 1; }
        view_is "$R/before.raw" "$ACTIVE" || { why="after the re-run: $why"; return 1; }
        if [ $kind = commit ]; then
            view_is "$R/top.raw" "$BASE" || { why="after the re-run, the base: $why"; return 1; }
            if [ -n "$REPOINT" ]; then
                local bf
                bf=$(qemu-img info -U --output=json "$ACTIVE" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("backing-filename"))')
                [ "$bf" = "$BASE" ] || { why="after the re-run, $ACTIVE is backed by $bf, not $BASE"; return 1; }
            fi
        fi
        if [ $kind = rebase ]; then
            local bf
            bf=$(qemu-img info -U --output=json "$ACTIVE" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("backing-filename", ""))')
            [ "$bf" = "$BASE" ] || { why="after the re-run, $ACTIVE is backed by '$bf', not '$BASE'"; return 1; }
        fi ;;
    esac
}

scenario() { # NAME KIND SETUP CMD...
    local name=$1 t0=$SECONDS n=0 nf=0 id p s out last st end kd
    kind=$2; local setup=$3; shift 3
    CMD=("$@")
    [ -n "${CRASH_ONLY:-}" ] && [[ "$name" != *"$CRASH_ONLY"* ]] && return
    NEWS=(); OLDS=(); ACTIVE=""; BASE=""; REPOINT=""
    cd "$work" && rm -rf sc && mkdir -p sc/w sc/ref
    W=$work/sc/w; R=$work/sc/ref; FINAL=$work/sc/final
    cd "$W" && $setup >/dev/null 2>"$work/sc/setup.err" ||
        { cd "$work"; bad "$name" "setup failed: $(cat sc/setup.err)"; return; }
    cd "$work"
    "${CRASH[@]}" record "$W" sc/ev -- "${CMD[@]}" >sc/run.out 2>&1 ||
        { bad "$name" "the recorded run fails: $(tail -3 sc/run.out)"; return; }
    cp -a "$W" "$FINAL"
    out=$("${CRASH[@]}" states sc/ev sc/st "${SC_MAX:-$MAX}" 2>&1) ||
        { bad "$name" "crash.py states: $out"; return; }
    last=$("${CRASH[@]}" summary sc/ev | wc -l)
    while read -r id p s; do
        n=$((n+1)); why="?"; note=""
        st=$work/sc/st/s$id; end=0
        [ "$p" = "$last" ] && [ "$s" = 0 ] && end=1
        cp -a "$st" "$st.orig"
        cd "$st"
        if state_check $end; then
            rerun_check && why=OK
        else
            local w1=$why
            why=""; rerun_check || true
            why="$w1${why:+; $why}"
        fi
        cd "$work"
        if [ "$why" != OK ]; then
            nf=$((nf+1))
            [ -n "$keep" ] || keep=$(mktemp -d /tmp/qchain-crash.XXXXXX)
            kd=$keep/$name-p$p-s$s
            rm -rf "$kd"; mkdir -p "$kd"
            cp -a "$st.orig" "$kd/state"; cp sc/ev "$kd/events"
            echo "  FAIL $name point $p/$last seed $s: $why"
        elif [ -n "$note" ]; then
            echo "  note $name point $p/$last seed $s: $note"
        fi
        rm -rf "$st" "$st.orig"
    done < sc/st/list
    echo "# $name: $out; $n states tried, $nf failed, $((SECONDS - t0)) s"
    if [ $nf -eq 0 ]; then ok "$name ($n crash states)"
    else bad "$name" "$nf of $n crash states fail (kept in $keep)"; fi
    rm -rf sc
}

# --- setups (run in $W; references into $R)
mk_base_qcow2() { # NAME: 8M qcow2 with data
    qemu-img create -q -f qcow2 "$1" 8M
    qemu-io -c 'write -P 0x11 0 2M' -c 'write -P 0x12 5M 64k' "$1" >/dev/null
}
setup_create() { NEWS=(new.qcow2); :; }
setup_create_b() {
    mk_base_qcow2 base.qcow2; NEWS=(new.qcow2); OLDS=(base.qcow2)
}
setup_snap1() {
    mk_base_qcow2 d1.qcow2; NEWS=(o1.qcow2); OLDS=(d1.qcow2)
}
setup_snap2() {
    mk_base_qcow2 d1.qcow2
    qemu-img create -q -f raw d2.raw 4M
    qemu-io -f raw -c 'write -P 0x21 0 1M' d2.raw >/dev/null
    NEWS=(o1.qcow2 o2.qcow2); OLDS=(d1.qcow2)
}
setup_export() {
    mk_base_qcow2 base.qcow2
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    qemu-io -c 'write -P 0x31 1M 1M' -c 'write -z 5M 64k' top.qcow2 >/dev/null
    NEWS=(out.raw); OLDS=(top.qcow2)
}
setup_commit_raw() {
    qemu-img create -q -f raw base.raw 8M
    qemu-io -f raw -c 'write -P 0x11 0 3M' base.raw >/dev/null
    qemu-img create -q -f qcow2 -b base.raw -F raw s1.qcow2
    qemu-io -c 'write -P 0x22 1M 2M' -c 'write -z 2M 64k' -c 'write -P 0x23 6M 512k' s1.qcow2 >/dev/null
    qemu-img convert -O raw s1.qcow2 "$R/before.raw"
    cp "$R/before.raw" "$R/top.raw"
    ACTIVE=s1.qcow2; BASE=base.raw
}
setup_commit_qcow2() {
    mk_base_qcow2 base.qcow2
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 s1.qcow2
    qemu-io -c 'write -P 0x22 1M 2M' -c 'write -z 0 64k' -c 'write -P 0x23 6M 512k' \
            -c 'write -c -P 0x24 7M 128k' s1.qcow2 >/dev/null
    qemu-img convert -O raw s1.qcow2 "$R/before.raw"
    cp "$R/before.raw" "$R/top.raw"
    ACTIVE=s1.qcow2; BASE=base.qcow2
}
setup_commit_top() {
    mk_base_qcow2 base.qcow2
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
    qemu-io -c 'write -P 0x22 1M 2M' -c 'write -z 0 64k' -c 'write -P 0x23 6M 512k' mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 act.qcow2
    qemu-io -c 'write -P 0x33 1536k 64k' -c 'write -P 0x34 7M 64k' act.qcow2 >/dev/null
    qemu-img convert -O raw act.qcow2 "$R/before.raw"
    qemu-img convert -O raw mid.qcow2 "$R/top.raw"
    ACTIVE=act.qcow2; BASE=base.qcow2; REPOINT=1
}
# a raw base under a long name: the re-pointed header (backing format
# extension and name) spans more than one sector
LONGB=base-$(printf 'x%.0s' $(seq 1 200)).raw
setup_commit_top_long() {
    qemu-img create -q -f raw "$LONGB" 8M
    qemu-io -f raw -c 'write -P 0x11 0 3M' "$LONGB" >/dev/null
    qemu-img create -q -f qcow2 -b "$LONGB" -F raw mid.qcow2
    qemu-io -c 'write -P 0x22 1M 2M' -c 'write -P 0x23 6M 512k' mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 act.qcow2
    qemu-io -c 'write -P 0x33 1536k 64k' act.qcow2 >/dev/null
    qemu-img convert -O raw act.qcow2 "$R/before.raw"
    qemu-img convert -O raw mid.qcow2 "$R/top.raw"
    ACTIVE=act.qcow2; BASE=$LONGB; REPOINT=1
}
# the image to re-point has no backing format extension and a feature
# name table that runs past sector 0 (an image qemu-img rebase -u made
# before -F was required): its extensions must be laid out anew, over
# several sectors
drop_backing_format() { python3 - "$1" <<'PY'
import struct, sys
p = sys.argv[1]
d = bytearray(open(p, 'rb').read())
hl = struct.unpack('>I', d[100:104])[0]
off, exts = hl, []
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
d[hl:bo + bl] = bytes(bo + bl - hl)
d[hl:hl + len(out)] = out
pos = hl + len(out)
d[pos:pos + bl] = name
d[8:20] = struct.pack('>QI', pos, bl)
open(p, 'wb').write(d)
PY
}
setup_commit_top_nofmt() {
    setup_commit_top_long
    drop_backing_format act.qcow2
    qemu-img info -U act.qcow2 | grep -q 'backing file format' && return 1
    qemu-img compare -U -q -f raw -F qcow2 "$R/before.raw" act.qcow2
}
setup_leaky() {
    mk_base_qcow2 img.qcow2
    qemu-io -c 'write -P 0x41 3M 1M' img.qcow2 >/dev/null
    "${CRASH[@]}" leak img.qcow2
    qemu-img check -q img.qcow2 >/dev/null 2>&1; [ $? -eq 3 ] || return 1
    qemu-img convert -O raw img.qcow2 "$R/before.raw"
    ACTIVE=img.qcow2
}

# rebase: ACTIVE's view never changes; BASE is the backing name the re-run
# must leave ("" none)
setup_rebase_drop() { setup_commit_top; BASE=base.qcow2; }
setup_rebase_flat() { setup_commit_top; BASE=""; }
setup_rebase_nofmt() { setup_commit_top_nofmt; BASE=$LONGB; }
setup_rebase_moved() {
    setup_commit_top; cp mid.qcow2 moved.qcow2; BASE=moved.qcow2
}

C=$B/qchain-commit
scenario create new setup_create $B/qchain-create -f qcow2 new.qcow2 8M
scenario create-backing new setup_create_b $B/qchain-create -f qcow2 -b base.qcow2 -F qcow2 new.qcow2
scenario snapshot new setup_snap1 $B/qchain-snapshot d1.qcow2 o1.qcow2
scenario snapshot-2disks new setup_snap2 $B/qchain-snapshot d1.qcow2:o1.qcow2 d2.raw:o2.qcow2
scenario export export setup_export $B/qchain-export top.qcow2 out.raw
scenario commit-raw commit setup_commit_raw $C s1.qcow2
scenario commit-qcow2 commit setup_commit_qcow2 $C s1.qcow2
scenario commit-top commit setup_commit_top $C --top mid.qcow2 --base base.qcow2 act.qcow2
scenario commit-top-long commit setup_commit_top_long $C --top mid.qcow2 --base "$LONGB" act.qcow2
scenario commit-top-nofmt commit setup_commit_top_nofmt $C --top mid.qcow2 --base "$LONGB" act.qcow2
# (30 states each: the write path under them is commit's, proven above)
SC_MAX=$(( MAX < 30 ? MAX : 30 ))
scenario rebase-drop-middle rebase setup_rebase_drop $B/qchain-rebase -b base.qcow2 -F qcow2 act.qcow2
scenario rebase-flatten rebase setup_rebase_flat $B/qchain-rebase -b "" act.qcow2
scenario rebase-nofmt-long rebase setup_rebase_nofmt $B/qchain-rebase -b "$LONGB" -F raw act.qcow2
scenario rebase-u-moved rebase setup_rebase_moved $B/qchain-rebase -u -b moved.qcow2 -F qcow2 act.qcow2
SC_MAX=
scenario check-r-leaks repair setup_leaky $B/qchain-check -r leaks img.qcow2
scenario check-r-all repair setup_leaky $B/qchain-check -r all img.qcow2
[ -n "$keep" ] && echo "# failing states kept in $keep (state/ and the events: crash.py summary DIR/events)"
finish
