# lib.sh - shared helpers for the qchain CLI tests (sourced, bash).
#
# Environment:
#   QCHAIN_BIN     directory holding qchain-info, qchain-map, qchain-export
#                  (required; ctest sets it to the build's tools/ directory)
#   QCHAIN_IMAGES  the source tree's tests/images directory (bad_images.sh)
#   QEMU_IMG, QEMU_IO  qemu-img / qemu-io to compare with (default: PATH)
#   QCHAIN_KEEP=1  keep the temporary directory (its path is printed)
#
# A script sources this file, then runs cases:
#
#   tcase "map v3-c64k" case_map v3-c64k.qcow2
#
# runs the function in a subshell (so it may cd), prints "ok - NAME" or
# "not ok - NAME" followed by the function's "# ..." diagnostics, and
# counts.  `finish` prints a summary and exits 1 if any case failed.
# Every run of a qchain command goes through `qc`, which records the exit
# code and output and flags sanitizer reports; `expect_*` helpers print both
# sides of a mismatch and return 1.

set -u
export LC_ALL=C
umask 022

: "${QCHAIN_BIN:?QCHAIN_BIN must name the directory with the qchain tools}"
QCHAIN_BIN=$(cd "$QCHAIN_BIN" && pwd)
QCHAIN_IMAGES=${QCHAIN_IMAGES:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../images" && pwd)}
QEMU_IMG=${QEMU_IMG:-$(command -v qemu-img || true)}
QEMU_IO=${QEMU_IO:-$(command -v qemu-io || true)}
CLI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INFO_COMPARE="$CLI_DIR/info_compare.py"
. "$CLI_DIR/../python3.sh"
. "$CLI_DIR/../holder.sh"
HOLD_TRAP=1
# isolated, no site packages: starts in a third of the time
PY="python3 -I -S"

# Tools that hang (a backing loop followed forever) are killed.
QC_TIMEOUT=${QC_TIMEOUT:-30}

SCRIPT_NAME=$(basename "$0" .sh)
TESTTMP=$(mktemp -d "${TMPDIR:-/tmp}/qchain-cli-$SCRIPT_NAME.XXXXXX")
QC_OUT=$TESTTMP/.qc.stdout
QC_ERR=$TESTTMP/.qc.stderr
QC_RC=0
N_PASS=0
N_FAIL=0
FAILED_CASES=()

cleanup() {
    if [ "${QCHAIN_KEEP:-0}" = 1 ]; then
        echo "# kept $TESTTMP"
    else
        # make everything removable (tests chmod some files)
        chmod -R u+rwX "$TESTTMP" 2>/dev/null
        rm -rf "$TESTTMP"
    fi
}
trap cleanup EXIT

# ------------------------------------------------------------------ output

diag() { printf '# %s\n' "$*"; }

# Print a file indented as diagnostics (at most N lines, default 40).
diag_file() {
    local f=$1 n=${2:-40} total
    [ -e "$f" ] || { diag "  ($f does not exist)"; return; }
    total=$(wc -l < "$f")
    sed -n "1,${n}p" "$f" | sed 's/^/#   /'
    if [ "$total" -gt "$n" ]; then diag "  ... ($total lines)"; fi
}

# tcase NAME FUNC [ARGS...]: run one case.
tcase() {
    local name=$1 rc
    shift
    local log=$TESTTMP/.case.log t0=$SECONDS
    ( "$@" ) > "$log" 2>&1
    rc=$?
    if [ "$((SECONDS - t0))" -ge "${QCHAIN_SLOW:-10}" ]; then
        echo "# slow case: $name took $((SECONDS - t0)) s" >> "$log"
    fi
    if [ "$rc" -eq 0 ]; then
        echo "ok - $name"
        N_PASS=$((N_PASS + 1))
    else
        echo "not ok - $name"
        N_FAIL=$((N_FAIL + 1))
        FAILED_CASES+=("$name")
    fi
    # diagnostics (and any stray output) follow the result line
    [ -s "$log" ] && awk '{ if ($0 !~ /^#/) $0 = "# " $0; print }' "$log"
    return 0
}

finish() {
    echo "1..$((N_PASS + N_FAIL))"
    echo "# $SCRIPT_NAME: $N_PASS passed, $N_FAIL failed"
    if [ "$N_FAIL" -gt 0 ]; then
        local c
        for c in "${FAILED_CASES[@]}"; do echo "#   failed: $c"; done
        exit 1
    fi
    exit 0
}

# Exit 77 (ctest skip) when qemu-img/qemu-io are missing.
need_qemu() {
    if [ -z "$QEMU_IMG" ] || [ -z "$QEMU_IO" ]; then
        echo "# qemu-img/qemu-io not found: skipping $SCRIPT_NAME"
        exit 77
    fi
}

need_python() {
    if ! command -v python3 >/dev/null; then
        echo "# python3 not found: skipping $SCRIPT_NAME"
        exit 77
    fi
}

# A fresh directory for a case: `cd "$(casedir NAME)"`.
casedir() {
    local d=$TESTTMP/$1
    rm -rf "$d"
    mkdir -p "$d"
    printf '%s\n' "$d"
}

# ------------------------------------------------------------- running

# qc TOOL ARGS...: run qchain-TOOL (info, map, export) with stdout in
# $QC_OUT, stderr in $QC_ERR, exit code in $QC_RC.  Returns 0.
qc() {
    local tool=$1
    shift
    QC_CMD="qchain-$tool $*"
    timeout -k 5 "$QC_TIMEOUT" "$QCHAIN_BIN/qchain-$tool" "$@" \
        > "$QC_OUT" 2> "$QC_ERR" < /dev/null
    QC_RC=$?
    return 0
}

# qemu-img / qemu-io, failing loudly (the test setup must work).
qimg() {
    "$QEMU_IMG" "$@" || { echo "# SETUP FAILED: qemu-img $*" >&2; return 1; }
}
qio() {
    local out
    out=$("$QEMU_IO" "$@" 2>&1)
    local rc=$?
    if [ $rc -ne 0 ] || printf '%s' "$out" | grep -qiE 'error|failed|cannot'; then
        echo "# SETUP FAILED: qemu-io $*" >&2
        printf '%s\n' "$out" | sed 's/^/#   /' >&2
        return 1
    fi
    return 0
}

# ------------------------------------------------------------- asserts

# No sanitizer report in the last qc stderr.
expect_clean() {
    if grep -qE 'AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:|Segmentation fault|Aborted' "$QC_ERR"; then
        diag "sanitizer/crash report from: $QC_CMD"
        diag_file "$QC_ERR" 60
        return 1
    fi
    return 0
}

# expect_rc WANT: the last qc exit code (and no sanitizer report).
expect_rc() {
    local want=$1
    if [ "$QC_RC" -ne "$want" ]; then
        diag "command:  $QC_CMD"
        diag "exit code: expected $want, got $QC_RC"
        diag "stderr:"
        diag_file "$QC_ERR" 20
        diag "stdout:"
        diag_file "$QC_OUT" 10
        return 1
    fi
    expect_clean
}

# expect_failure TOOL FILE: exit 1, stderr starts "qchain-TOOL: 'FILE': " (after any
# warnings) with a non-empty message, no sanitizer report.
expect_failure() {
    local tool=$1 file=$2 prefix first
    prefix="qchain-$tool: '$file': "
    expect_rc 1 || return 1
    # warnings may come first (a part of the image left aside)
    first=$(grep -v "^qchain-$tool: warning: " "$QC_ERR" | head -n 1)
    case "$first" in
    "$prefix"?*) ;;
    *)
        diag "command: $QC_CMD"
        diag "stderr should start with: $prefix<message>"
        diag "stderr:"
        diag_file "$QC_ERR" 10
        return 1
        ;;
    esac
    return 0
}

# expect_stderr_match REGEX: the last qc stderr matches (grep -E).
expect_stderr_match() {
    if ! grep -qE -- "$1" "$QC_ERR"; then
        diag "command: $QC_CMD"
        diag "stderr should match /$1/; stderr:"
        diag_file "$QC_ERR" 10
        return 1
    fi
}

# expect_same_bytes EXPECTED ACTUAL: cmp, with where they differ.
expect_same_bytes() {
    local want=$1 got=$2
    if ! cmp -s "$want" "$got"; then
        diag "files differ: expected $want ($(stat -c %s "$want" 2>/dev/null || echo missing) bytes)," \
             "got $got ($(stat -c %s "$got" 2>/dev/null || echo missing) bytes)"
        cmp "$want" "$got" 2>&1 | sed 's/^/#   /'
        if [ -e "$want" ] && [ -e "$got" ]; then
            diag "first differing bytes (offset expected actual, octal):"
            cmp -l "$want" "$got" 2>/dev/null | head -n 5 | sed 's/^/#   /'
            diag "differing bytes: $(cmp -l "$want" "$got" 2>/dev/null | wc -l)"
        fi
        return 1
    fi
    return 0
}

# expect_same_text EXPECTED ACTUAL [LABEL]: diff -u, both sides shown.
expect_same_text() {
    local want=$1 got=$2
    if ! diff -q "$want" "$got" >/dev/null 2>&1; then
        diag "${3:-output} differs (--- expected, +++ actual):"
        diff -u "$want" "$got" 2>&1 | head -n 60 | sed 's/^/#   /'
        return 1
    fi
    return 0
}

# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
    if [ "$2" != "$3" ]; then
        diag "$1: expected '$2', got '$3'"
        return 1
    fi
    return 0
}

# ------------------------------------------------------- comparisons

# cmp_export IMAGE [QEMU_FMT_ARGS...]: qchain-export IMAGE vs qemu-img
# convert -O raw.  Extra args go to both (e.g. -f raw).  Output files in $PWD.
cmp_export() {
    local img=$1
    shift
    rm -f ref.raw out.raw
    qimg convert "$@" -O raw "$img" ref.raw || return 1
    qc export "$@" "$img" out.raw
    expect_rc 0 || return 1
    [ -s "$QC_ERR" ] && { diag "unexpected stderr:"; diag_file "$QC_ERR"; return 1; }
    expect_same_bytes ref.raw out.raw
}

# cmp_export_snapshot IMAGE SNAP: -s SNAP vs qemu-img convert -l SNAP.
cmp_export_snapshot() {
    local img=$1 snap=$2
    rm -f ref.raw out.raw
    qimg convert -l "$snap" -O raw "$img" ref.raw || return 1
    qc export -s "$snap" "$img" out.raw
    expect_rc 0 || return 1
    expect_same_bytes ref.raw out.raw
}

# cmp_map IMAGE [ARGS...]: qchain-map --output=json vs qemu-img map.
cmp_map() {
    local img=$1
    shift
    qimg map --output=json "$@" "$img" > map.ref || return 1
    qc map --output=json "$@" "$img"
    expect_rc 0 || return 1
    cp "$QC_OUT" map.out
    expect_same_text map.ref map.out "map --output=json"
}

# cmp_info IMAGE [ARGS...]: qchain-info --output=json vs qemu-img info on
# the keys the issue lists (info_compare.py).  --backing-chain compares
# the lists element by element.
cmp_info() {
    local img=$1
    shift
    qimg info --output=json "$@" "$img" > info.ref || return 1
    qc info --output=json "$@" "$img"
    expect_rc 0 || return 1
    cp "$QC_OUT" info.out
    if ! $PY "$INFO_COMPARE" info.ref info.out > info.diff 2>&1; then
        diag "info --output=json $* disagrees with qemu-img info:"
        diag_file info.diff 40
        return 1
    fi
    return 0
}

# --------------------------------------------------------- image making

# Deterministic incompressible data: rand_file FILE BYTES [SEED]
rand_file() {
    local cache=$TESTTMP/.rand-$2-${3:-1}
    if [ -e "$cache" ]; then cp "$cache" "$1"; return; fi
    $PY -c '
import random, sys
r = random.Random(int(sys.argv[3]))
open(sys.argv[1], "wb").write(bytes(r.getrandbits(8) for _ in range(int(sys.argv[2]))))
' "$cache" "$2" "${3:-1}" && cp "$cache" "$1"
}

# hpoke FILE OFFSET FMT EXPR: replace the big-endian struct FMT value at
# OFFSET with the Python expression EXPR of its old value v.
hpoke() {
    $PY -c '
import struct, sys
f, off, fmt, expr = sys.argv[1], int(sys.argv[2], 0), ">" + sys.argv[3], sys.argv[4]
with open(f, "r+b") as fh:
    fh.seek(off)
    v = struct.unpack(fmt, fh.read(struct.calcsize(fmt)))[0]
    fh.seek(off)
    fh.write(struct.pack(fmt, eval(expr)))
' "$@"
}

# host_offset IMAGE GUEST: the host offset qemu-img map reports for GUEST
host_offset() {
    "$QEMU_IMG" map --output=json "$1" | $PY -c '
import json, sys
g = int(sys.argv[1])
for e in json.load(sys.stdin):
    if e["start"] <= g < e["start"] + e["length"] and "offset" in e:
        print(e["offset"] + g - e["start"]); break
' "$2"
}

# unit SIZE CLUSTER: the write unit for fill patterns: the cluster size,
# at least 4 KiB, at most SIZE/32 (so 2 MiB clusters get partial writes).
unit_for() {
    local size=$1 cs=$2 u
    u=$cs
    [ "$u" -lt 4096 ] && u=4096
    while [ $((32 * u)) -gt "$size" ]; do u=$((u / 2)); done
    echo "$u"
}

# fill FMT IMAGE SIZE UNIT: the base write pattern: full units, partial
# units, writes across unit boundaries, zero data, write -z over data and
# over holes (with and without -u), discards, incompressible data, the
# last sector.  Needs rand.bin (UNIT bytes) in $PWD for -s.
fill() {
    local fmt=$1 img=$2 size=$3 u=$4
    [ -e rand.bin ] || rand_file rand.bin "$u" 7
    qio -f "$fmt" \
        -c "write -P 0x11 0 $u" \
        -c "write -P 0x22 $((2 * u + u / 2)) $((u / 4))" \
        -c "write -P 0x33 $((3 * u - u / 4)) $((u / 2))" \
        -c "write -s rand.bin $((4 * u)) $u" \
        -c "write -P 0x00 $((5 * u)) $u" \
        -c "write -P 0x55 $((6 * u)) $((2 * u))" \
        -c "write -z $((6 * u)) $u" \
        -c "write -z $((8 * u)) $u" \
        -c "write -P 0x66 $((10 * u)) $((2 * u))" \
        -c "discard $((10 * u)) $u" \
        -c "write -P 0x77 $((12 * u)) $u" \
        -c "write -z $((12 * u + u / 4)) $((u / 4))" \
        -c "discard $((12 * u + u / 2)) $((u / 4))" \
        -c "write -P 0x44 $((13 * u)) $u" \
        -c "write -z -u $((13 * u)) $u" \
        -c "write -P 0x88 $((14 * u + 512)) $u" \
        -c "write -P 0xaa $((size / 2)) $((u + 1024))" \
        -c "write -P 0x99 $((size - 512)) 512" \
        "$img"
}

# fill2 FMT IMAGE SIZE UNIT: an overlay's pattern, offset by half units
# against fill's, so it covers backing data partly, zeroes and discards
# over backing data, and writes past a smaller backing file's end.
fill2() {
    local fmt=$1 img=$2 size=$3 u=$4
    qio -f "$fmt" \
        -c "write -P 0xa1 $((u / 2)) $u" \
        -c "write -z $((2 * u)) $u" \
        -c "discard $((3 * u)) $u" \
        -c "write -P 0xa2 $((4 * u + 512)) 1024" \
        -c "write -z $((6 * u + u / 2)) $((u / 2))" \
        -c "write -P 0xa3 $((11 * u)) $((2 * u))" \
        -c "write -P 0xa4 $((size - u)) $u" \
        -c "write -P 0xa5 $((size * 3 / 4)) $((u / 2))" \
        "$img"
}

# mk_q FILE SIZE [qemu-img create options...]: a filled qcow2 image.
# Options are qemu-img create -o options (comma list, may be empty) and
# the cluster size is parsed from them (default 64k).
mk_q() {
    local img=$1 size=$2 opts=${3:-} cs=65536
    case ",$opts," in
    *,cluster_size=*)
        cs=$(printf '%s' ",$opts," | sed 's/.*,cluster_size=\([0-9kKmM]*\),.*/\1/')
        cs=$(qsize "$cs")
        ;;
    esac
    qimg create -q -f qcow2 ${opts:+-o "$opts"} "$img" "$size" || return 1
    fill qcow2 "$img" "$(qsize "$size")" "$(unit_for "$(qsize "$size")" "$cs")"
}

# qsize 4M -> bytes (suffixes k, M, G)
qsize() {
    case $1 in
    *[kK]) echo $((${1%?} * 1024)) ;;
    *M) echo $((${1%?} * 1048576)) ;;
    *G) echo $((${1%?} * 1073741824)) ;;
    *) echo $(($1)) ;;
    esac
}

# matrix_build DIR: make the image matrix in DIR and list it in
# DIR/MATRIX, one image a line: "NAME FILE [SNAPSHOT...]" (the pseudo
# snapshot -noexport marks images too large to export and cmp; FILE relative
# to DIR; commands must run with DIR as the working directory, as qemu
# resolves external data file names against it).
matrix_build() {
    local d=$1
    mkdir -p "$d" && cd "$d" || return 1
    : > MATRIX
    local m=$PWD/MATRIX
    : > SETUP_FAILED
    add() { echo "$*" >> "$m"; }
    setup_fail() { echo "$1" >> "$d/SETUP_FAILED"; }

    # --- single images: versions, cluster sizes, refcount widths
    mk_q v2-c512.qcow2 2M compat=0.10,cluster_size=512 && add v2-c512 v2-c512.qcow2 || setup_fail v2-c512
    mk_q v2-c64k.qcow2 4M compat=0.10,cluster_size=64k && add v2-c64k v2-c64k.qcow2 || setup_fail v2-c64k
    mk_q v3-c512.qcow2 2M cluster_size=512 && add v3-c512 v3-c512.qcow2 || setup_fail v3-c512
    mk_q v3-c4k.qcow2 4M cluster_size=4k && add v3-c4k v3-c4k.qcow2 || setup_fail v3-c4k
    mk_q v3-c64k.qcow2 4M cluster_size=64k && add v3-c64k v3-c64k.qcow2 || setup_fail v3-c64k
    mk_q v3-c2M.qcow2 16M cluster_size=2M && add v3-c2M v3-c2M.qcow2 || setup_fail v3-c2M
    mk_q rc1-c4k.qcow2 4M cluster_size=4k,refcount_bits=1 && add rc1-c4k rc1-c4k.qcow2 || setup_fail rc1-c4k
    mk_q rc16-c512.qcow2 2M cluster_size=512,refcount_bits=16 && add rc16-c512 rc16-c512.qcow2 || setup_fail rc16-c512
    mk_q rc64-c64k.qcow2 4M cluster_size=64k,refcount_bits=64 && add rc64-c64k rc64-c64k.qcow2 || setup_fail rc64-c64k
    mk_q rc64-c512.qcow2 2M cluster_size=512,refcount_bits=64 && add rc64-c512 rc64-c512.qcow2 || setup_fail rc64-c512
    # odd virtual size (not a multiple of the cluster size)
    qimg create -q -f qcow2 -o cluster_size=64k odd-size.qcow2 $((3 * 1048576 + 512 * 7)) &&
        fill qcow2 odd-size.qcow2 $((3 * 1048576 + 512 * 7)) 65536 && add odd-size odd-size.qcow2 || setup_fail odd-size

    # --- compressed images from qemu-img convert -c
    qimg convert -c -O qcow2 -o cluster_size=64k v3-c64k.qcow2 zlib-c64k.qcow2 &&
        add zlib-c64k zlib-c64k.qcow2 || setup_fail zlib-c64k
    qimg convert -c -O qcow2 -o cluster_size=4k v3-c4k.qcow2 zlib-c4k.qcow2 &&
        add zlib-c4k zlib-c4k.qcow2 || setup_fail zlib-c4k
    qimg convert -c -O qcow2 -o compat=0.10,cluster_size=512 v3-c512.qcow2 zlib-v2-c512.qcow2 &&
        add zlib-v2-c512 zlib-v2-c512.qcow2 || setup_fail zlib-v2-c512
    qimg convert -c -O qcow2 -o cluster_size=64k,compression_type=zstd v3-c64k.qcow2 zstd-c64k.qcow2 &&
        add zstd-c64k zstd-c64k.qcow2 || setup_fail zstd-c64k
    qimg convert -c -O qcow2 -o cluster_size=2M,compression_type=zstd v3-c2M.qcow2 zstd-c2M.qcow2 &&
        add zstd-c2M zstd-c2M.qcow2 || setup_fail zstd-c2M
    qimg convert -c -O qcow2 -o cluster_size=512,compression_type=zstd,refcount_bits=1 v3-c512.qcow2 zstd-c512.qcow2 &&
        add zstd-c512 zstd-c512.qcow2 || setup_fail zstd-c512
    # compressed, then partly overwritten (COW out of compressed clusters)
    qimg convert -c -O qcow2 -o cluster_size=64k,compression_type=zstd v3-c64k.qcow2 zstd-mixed.qcow2 &&
        qio -f qcow2 -c "write -P 0xc1 4096 4096" -c "write -P 0xc2 1M 64k" \
            -c "write -z 2M 64k" -c "write -c -P 0xc3 3M 64k" zstd-mixed.qcow2 &&
        add zstd-mixed zstd-mixed.qcow2 || setup_fail zstd-mixed
    qimg convert -c -O qcow2 -o cluster_size=4k v3-c4k.qcow2 zlib-mixed.qcow2 &&
        qio -f qcow2 -c "write -P 0xc1 512 1024" -c "discard 0 4096" \
            -c "write -c -P 0xc4 4k 4k" zlib-mixed.qcow2 &&
        add zlib-mixed zlib-mixed.qcow2 || setup_fail zlib-mixed

    # --- extended L2 (subclusters)
    mk_q extl2-c64k.qcow2 4M cluster_size=64k,extended_l2=on && add extl2-c64k extl2-c64k.qcow2 || setup_fail extl2-c64k
    mk_q extl2-c16k.qcow2 2M cluster_size=16k,extended_l2=on && add extl2-c16k extl2-c16k.qcow2 || setup_fail extl2-c16k
    mk_q extl2-c2M.qcow2 16M cluster_size=2M,extended_l2=on && add extl2-c2M extl2-c2M.qcow2 || setup_fail extl2-c2M
    qimg convert -c -O qcow2 -o cluster_size=64k,extended_l2=on v3-c64k.qcow2 extl2-zlib.qcow2 &&
        add extl2-zlib extl2-zlib.qcow2 || setup_fail extl2-zlib

    # --- lazy refcounts, clean and left dirty (qemu-io killed after a flush)
    mk_q lazy.qcow2 4M cluster_size=64k,lazy_refcounts=on && add lazy lazy.qcow2 || setup_fail lazy
    qimg create -q -f qcow2 -o cluster_size=4k,lazy_refcounts=on lazy-dirty.qcow2 4M &&
        sh -c '"$0" "$@"; true' "$QEMU_IO" -f qcow2 -c "write -P 0x5a 8k 12k" \
            -c "write -P 0x5b 1M 4k" -c flush -c "sigraise 9" lazy-dirty.qcow2 > /dev/null 2>&1 &&
        add lazy-dirty lazy-dirty.qcow2 || setup_fail lazy-dirty

    # --- external data files
    mk_q datafile.qcow2 4M cluster_size=64k,data_file=datafile.data && add datafile datafile.qcow2 || setup_fail datafile
    mk_q datafile-raw.qcow2 4M cluster_size=4k,data_file=datafile-raw.data,data_file_raw=on &&
        add datafile-raw datafile-raw.qcow2 || setup_fail datafile-raw

    # --- internal snapshots (ids 1 and 3 left after deleting s2; the image
    #     grew after s3, so the snapshots are smaller than the image)
    mk_q snap.qcow2 4M cluster_size=64k &&
        qimg snapshot -c s1 snap.qcow2 &&
        qio -f qcow2 -c "write -P 0xcc 0 64k" -c "discard 3M 64k" -c "write -z 1M 128k" \
            -c "write -P 0xcd 200k 4k" snap.qcow2 &&
        qimg snapshot -c s2 snap.qcow2 &&
        qio -f qcow2 -c "write -P 0xce 2M 64k" snap.qcow2 &&
        qimg snapshot -c s3 snap.qcow2 &&
        qimg snapshot -d s2 snap.qcow2 &&
        qimg resize -q snap.qcow2 +1M &&
        qio -f qcow2 -c "write -P 0xcf 0 4k" -c "write -P 0xd0 4608k 4k" snap.qcow2 &&
        add snap snap.qcow2 s1 1 s3 3 || setup_fail snap
    mk_q snap-v2.qcow2 2M compat=0.10,cluster_size=4k &&
        qimg snapshot -c first snap-v2.qcow2 &&
        qio -f qcow2 -c "write -P 0xdd 0 8k" -c "write -z 64k 4k" snap-v2.qcow2 &&
        add snap-v2 snap-v2.qcow2 first 1 || setup_fail snap-v2
    qimg convert -c -O qcow2 -o cluster_size=4k,extended_l2=off v3-c4k.qcow2 snap-zlib.qcow2 &&
        qimg snapshot -c packed snap-zlib.qcow2 &&
        qio -f qcow2 -c "write -P 0xde 0 64k" snap-zlib.qcow2 &&
        add snap-zlib snap-zlib.qcow2 packed || setup_fail snap-zlib

    # a snapshot larger than the image shrunk after it
    mk_q snap-shrunk.qcow2 4M cluster_size=4k &&
        qimg snapshot -c big snap-shrunk.qcow2 &&
        qimg resize -q --shrink snap-shrunk.qcow2 2M &&
        qio -f qcow2 -c "write -P 0xe0 1M 8k" snap-shrunk.qcow2 &&
        add snap-shrunk snap-shrunk.qcow2 big || setup_fail snap-shrunk

    # --- persistent dirty bitmaps
    mk_q bitmaps.qcow2 4M cluster_size=64k &&
        qimg bitmap --add bitmaps.qcow2 b0 &&
        qimg bitmap --add -g 128k bitmaps.qcow2 b1 &&
        qimg bitmap --add --disable bitmaps.qcow2 b2 &&
        qio -f qcow2 -c "write -P 0xb0 512k 64k" bitmaps.qcow2 &&
        add bitmaps bitmaps.qcow2 || setup_fail bitmaps

    # --- a raw image (probed)
    qimg create -q -f raw raw.img 4M && fill raw raw.img 4194304 65536 && add raw raw.img || setup_fail raw

    # --- edge cases
    # the last compressed cluster ends mid-sector at the end of the file
    # (its descriptor's sector range runs past EOF, as QEMU writes it)
    qimg create -q -f qcow2 -o cluster_size=64k ctail.qcow2 1M &&
        $PY -c 'import random; r=random.Random(3); open("half.bin","wb").write(bytes(r.getrandbits(8) if i%2 else 0 for i in range(65536)))' &&
        qio -f qcow2 -c "write -c -s half.bin 0 64k" -c "write -c -s half.bin 128k 64k" ctail.qcow2 &&
        [ $(( $(stat -c %s ctail.qcow2) % 512 )) -ne 0 ] &&
        add compressed-tail ctail.qcow2 || setup_fail compressed-tail
    # a hole punched in the host file inside allocated data clusters
    # (qemu-img map reports such ranges "zero": true, "data": true)
    command -v fallocate > /dev/null && { mk_q host-hole.qcow2 4M cluster_size=64k &&
        fallocate -p -o $(( $(host_offset host-hole.qcow2 0) + 8192 )) -l 8192 host-hole.qcow2 &&
        fallocate -p -o $(host_offset host-hole.qcow2 $((14 * 65536 + 8192))) -l $((65536 - 8192)) host-hole.qcow2 &&
        add host-hole host-hole.qcow2 || setup_fail host-hole; }
    # a raw file whose size is not a multiple of 512
    head -c 1000 rand.bin > raw-odd.img && add raw-odd raw-odd.img || setup_fail raw-odd
    # never written; zero virtual size
    qimg create -q -f qcow2 empty.qcow2 4M && add empty empty.qcow2 || setup_fail empty
    qimg create -q -f qcow2 zero-size.qcow2 0 && add zero-size zero-size.qcow2 || setup_fail zero-size
    # corrupt bit set (readable, as qemu-img reads it)
    mk_q corrupt-bit.qcow2 2M cluster_size=4k && hpoke corrupt-bit.qcow2 72 Q 'v | 2' &&
        add corrupt-bit corrupt-bit.qcow2 || setup_fail corrupt-bit
    # unknown compatible (bit 5) and autoclear (bit 10) feature bits: ignored
    mk_q unknown-bits.qcow2 2M cluster_size=4k &&
        hpoke unknown-bits.qcow2 80 Q 'v | 1 << 5' && hpoke unknown-bits.qcow2 88 Q 'v | 1 << 10' &&
        add unknown-bits unknown-bits.qcow2 || setup_fail unknown-bits
    # v3 header of 104 bytes (no compression type field, as before QEMU 5.1)
    mk_q header-104.qcow2 2M cluster_size=4k && hpoke header-104.qcow2 100 I 104 &&
        add header-104 header-104.qcow2 || setup_fail header-104
    # a bitmap left "in-use" by a killed writer; bitmaps whose autoclear bit
    # is clear (QEMU ignores the directory then)
    mk_q bitmaps-inuse.qcow2 2M cluster_size=64k && qimg bitmap --add bitmaps-inuse.qcow2 live &&
        sh -c '"$0" "$@"; true' "$QEMU_IO" -f qcow2 -c "write -P 0xb1 64k 4k" -c flush \
            -c "sigraise 9" bitmaps-inuse.qcow2 > /dev/null 2>&1 &&
        add bitmaps-inuse bitmaps-inuse.qcow2 || setup_fail bitmaps-inuse
    mk_q bitmaps-stale.qcow2 2M cluster_size=64k && qimg bitmap --add bitmaps-stale.qcow2 old &&
        hpoke bitmaps-stale.qcow2 88 Q 'v & ~1' &&
        add bitmaps-stale bitmaps-stale.qcow2 || setup_fail bitmaps-stale
    # 256 GiB virtual, a few writes far apart (not exported: too large to cmp)
    qimg create -q -f qcow2 sparse-256G.qcow2 256G &&
        qio -f qcow2 -c "write -P 0x01 0 4k" -c "write -P 0x02 100G 64k" \
            -c "write -z 200G 1G" -c "write -P 0x03 $((256 * 1073741824 - 512)) 512" sparse-256G.qcow2 &&
        add sparse-256G sparse-256G.qcow2 -noexport || setup_fail sparse-256G

    # --- chains (depth = number of images)
    # 2: qcow2 64k <- qcow2 4k
    mk_q c2-base.qcow2 4M cluster_size=64k &&
        qimg create -q -f qcow2 -o cluster_size=4k -b c2-base.qcow2 -F qcow2 c2-top.qcow2 4M &&
        fill2 qcow2 c2-top.qcow2 4194304 65536 && add chain2 c2-top.qcow2 || setup_fail chain2
    # 2: raw <- qcow2, overlay larger than its backing file
    qimg create -q -f raw c2r-base.img 2M && fill raw c2r-base.img 2097152 65536 &&
        qimg create -q -f qcow2 -o cluster_size=64k -b c2r-base.img -F raw c2r-top.qcow2 4M &&
        fill2 qcow2 c2r-top.qcow2 4194304 65536 && add chain2-raw c2r-top.qcow2 || setup_fail chain2-raw
    # 3: raw 2M <- v2 qcow2 512 3M <- qcow2 2M clusters 16M
    qimg create -q -f raw c3-base.img 2M && fill raw c3-base.img 2097152 4096 &&
        qimg create -q -f qcow2 -o compat=0.10,cluster_size=512 -b c3-base.img -F raw c3-mid.qcow2 3M &&
        fill2 qcow2 c3-mid.qcow2 3145728 4096 &&
        qimg create -q -f qcow2 -o cluster_size=2M -b c3-mid.qcow2 -F qcow2 c3-top.qcow2 16M &&
        fill2 qcow2 c3-top.qcow2 16777216 524288 && add chain3 c3-top.qcow2 || setup_fail chain3
    # 4: v2 4k 2M <- zstd-compressed 64k 3M <- extended L2 64k 4M <- 512 odd size
    mk_q c4-base.qcow2 2M compat=0.10,cluster_size=4k &&
        qimg create -q -f qcow2 -o cluster_size=64k,compression_type=zstd -b c4-base.qcow2 -F qcow2 c4-l1.qcow2 3M &&
        qio -f qcow2 -c "write -c -P 0xe1 0 64k" -c "write -c -P 0xe2 1M 64k" \
            -c "write -P 0xe3 2M 4k" -c "write -c -P 0xe4 2560k 64k" c4-l1.qcow2 &&
        qimg create -q -f qcow2 -o cluster_size=64k,extended_l2=on -b c4-l1.qcow2 -F qcow2 c4-l2.qcow2 4M &&
        fill2 qcow2 c4-l2.qcow2 4194304 65536 &&
        qimg create -q -f qcow2 -o cluster_size=512 -b c4-l2.qcow2 -F qcow2 c4-top.qcow2 $((4194304 + 1536)) &&
        qio -f qcow2 -c "write -P 0xe5 1000k 3k" -c "write -z 0 2k" -c "write -P 0xe6 4M 1536" c4-top.qcow2 &&
        add chain4 c4-top.qcow2 || setup_fail chain4
    # 2: overlay smaller than its backing file
    qimg create -q -f qcow2 -o cluster_size=4k -b v3-c64k.qcow2 -F qcow2 small-top.qcow2 2M &&
        fill2 qcow2 small-top.qcow2 2097152 65536 && add overlay-smaller small-top.qcow2 || setup_fail overlay-smaller
    # 3: backing names relative to other directories
    mkdir -p rel/a rel/b &&
        mk_q rel/a/base.qcow2 4M cluster_size=4k &&
        qimg create -q -f qcow2 -b ../a/base.qcow2 -F qcow2 rel/b/mid.qcow2 4M &&
        fill2 qcow2 rel/b/mid.qcow2 4194304 65536 &&
        qimg create -q -f qcow2 -o cluster_size=512 -b b/mid.qcow2 -F qcow2 rel/top.qcow2 4M &&
        qio -f qcow2 -c "write -P 0xf1 100k 3k" rel/top.qcow2 &&
        add rel-dirs rel/top.qcow2 || setup_fail rel-dirs
    # 2: absolute backing name
    qimg create -q -f qcow2 -b "$PWD/v3-c4k.qcow2" -F qcow2 abs-top.qcow2 4M &&
        fill2 qcow2 abs-top.qcow2 4194304 65536 && add abs-backing abs-top.qcow2 || setup_fail abs-backing
    # 2: overlay over an image with snapshots; the overlay has its own
    qimg create -q -f qcow2 -b snap.qcow2 -F qcow2 snap-top.qcow2 5M &&
        fill2 qcow2 snap-top.qcow2 5242880 65536 &&
        qimg snapshot -c top1 snap-top.qcow2 &&
        qio -f qcow2 -c "write -P 0xf2 0 64k" snap-top.qcow2 &&
        add snap-overlay snap-top.qcow2 top1 || setup_fail snap-overlay
    # 2: an overlay with an external data file over a compressed image
    qimg create -q -f qcow2 -o data_file=df-top.data -b zlib-c64k.qcow2 -F qcow2 df-top.qcow2 4M &&
        fill2 qcow2 df-top.qcow2 4194304 65536 && add datafile-overlay df-top.qcow2 || setup_fail datafile-overlay
    # 2: lazy refcounts + extended L2 + refcount width 1 over v2
    qimg create -q -f qcow2 -o cluster_size=32k,extended_l2=on,lazy_refcounts=on,refcount_bits=1 \
            -b v2-c64k.qcow2 -F qcow2 mix-top.qcow2 4M &&
        fill2 qcow2 mix-top.qcow2 4194304 32768 && add mixed-overlay mix-top.qcow2 || setup_fail mixed-overlay
    cd - > /dev/null
}

# matrix_prepare DIR: matrix_build, a failed case per image that could not
# be made (its recipe's qemu-img/qemu-io errors are shown).
matrix_prepare() {
    local d=$1 log=$TESTTMP/.matrix.log n
    echo "# building the image matrix in $d"
    matrix_build "$d" > "$log" 2>&1
    # Settle the files: QEMU zero-fills new clusters with fallocate, and
    # ext4 reports such unwritten extents as holes only while none of their
    # pages sits in the page cache, so SEEK_HOLE answers (which map reports
    # as "zero") change as soon as anything reads those blocks.  Reading
    # every file once gives both tools the same, stable answers.
    sync
    find "$d" -type f -exec cat {} + > /dev/null 2>&1 || true
    if [ -s "$d/SETUP_FAILED" ]; then
        sed 's/^/# /' "$log"
        while read -r n; do
            echo "not ok - setup $n"
            N_FAIL=$((N_FAIL + 1))
            FAILED_CASES+=("setup $n")
        done < "$d/SETUP_FAILED"
    fi
    [ -s "$d/MATRIX" ]
}
