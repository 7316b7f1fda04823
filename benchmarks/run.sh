#!/usr/bin/env bash
# Command-level benchmarks: a qchain command vs. its qemu-img counterpart,
# side by side in one run (DESIGN.md B.12, issue 2).
#
# Usage: benchmarks/run.sh [--build DIR] [--bin DIR] [--work DIR] [--runs N]
#                          [--keep] [--strict] [CASE...]
#
#   --build DIR  build tree; tools are taken from DIR/tools   (default ./build)
#   --bin DIR    directory holding the qchain-* binaries       (overrides --build)
#   --work DIR   where images are built; kept and reused across runs
#                (default: a fresh mktemp dir under /var/tmp, removed at exit)
#   --runs N     timed runs per command, alternating ours/qemu-img (default 5)
#   --keep       keep the mktemp work dir
#   --strict     exit 1 if a target is missed or outputs differ
#   CASE         one of the case_* functions below (default: all cases)
#
# Cases
# -----
# map   Image: `qemu-img create -f qcow2 img.qcow2 1T` (qcow2 v3, 64 KiB clusters,
#       16-bit refcounts, no backing file), then MAP_CLUSTERS = 20,000 distinct
#       64 KiB clusters written with `write -P <pattern> <offset> 64k` through ONE
#       qemu-io process fed on stdin.  Offsets are cluster-aligned, drawn from
#       the 2^24 clusters of the 1 TiB disk by the 31-bit LCG
#       x' = (1103515245*x + 12345) mod 2^31 seeded with MAP_SEED = 20240601
#       (cluster index = 15 high bits of one draw << 9 | 9 high bits of the
#       next; duplicates skipped), written in draw order, so host offsets do
#       not follow guest order.  Pattern byte of the i-th write = 1 + i % 255.
#       Result: ~1.3 GiB file, ~2,000 L2 tables, ~20,000 data extents.
#       Compared: `qchain-map --output=json img.qcow2 > /dev/null`
#             vs. `qemu-img map --output=json img.qcow2 > /dev/null`
#       Targets (issue 2): qemu-img time / qchain time >= 4, qchain peak RSS
#       < 16 MiB.  The two JSON outputs must be byte-identical.
#
# delta The map image (a copy) re-pointed with `qemu-img rebase -u` at a 1 TiB
#       sparse raw base (`qemu-img create -f raw base.raw 1T`, nothing
#       written): an overlay with 20,000 scattered 64 KiB clusters.
#       Compared: `qchain-delta --output=json --rate=history overlay.qcow2
#       > /dev/null` vs. `qemu-img map --output=json overlay.qcow2 >
#       /dev/null` (the nearest thing an operator has).  --rate=history: the
#       walk alone, without the time measurement (case predict; bounded by
#       ~2 s and 64 MiB, which it adds to a default run).  Targets (issue 5): >= 4x, qchain
#       peak RSS < 16 MiB.
#
# check The image of case map.
#       Compared: `qchain-check --output=json img.qcow2 > /dev/null`
#             vs. `qemu-img check --output=json img.qcow2 > /dev/null`
#       Targets (issue 20, "check at memory speed"; issue 6 asked for 2):
#       qemu-img time / qchain time >= 5, i.e. at most 0.2 of qemu-img's
#       time, qchain peak RSS < 16 MiB (its counters take 4 bytes per
#       cluster of the file, not of the virtual size).  The outputs are not compared byte for byte
#       (qchain adds "findings" and "leaked-ranges"); tests/cli/check.sh
#       compares the counters.
#
# map16t The map image at 16 times the scale (issue 20): `qemu-img create -f
#       qcow2 img.qcow2 16T` (64 KiB clusters), then MAP16T_CLUSTERS =
#       200,000 distinct 64 KiB clusters written as in case map (one
#       qemu-io process, `write -P <1 + i % 255> <offset> 64k`, draw order)
#       at cluster indexes drawn from the 2^28 clusters of the 16 TiB disk
#       by the same LCG seeded MAP16T_SEED = 20261203 (index = 15 high bits
#       of one draw << 13 | 13 high bits of the next; duplicates skipped).
#       qemu-io runs with -t unsafe (no flush per metadata update: the same
#       image, built in ~4 minutes instead of hours; it makes case map's
#       image byte for byte too).  Result: ~15 GiB file, ~32,700 L2 tables
#       (2 GiB of them), ~400,000 extents.
#       Compared: `qchain-map --output=json img.qcow2 > /dev/null`
#             vs. `qemu-img map --output=json img.qcow2 > /dev/null`
#       Targets (issue 20): qemu-img time / qchain time >= 10, i.e. at most
#       0.1 of qemu-img's time, qchain peak RSS < 16 MiB.  The two JSON
#       outputs must be byte-identical.
#
# delta16t The map16t image itself (not a copy: that would take another
#       15 GiB), pointed for the length of the case with `qemu-img rebase -u
#       -b base.qcow2 -F qcow2` at an empty 16 TiB qcow2 base (`qemu-img
#       create -f qcow2 base.qcow2 16T`; qcow2 because ext4 holds no 16 TiB
#       raw file), and pointed back at none afterwards (also at exit, and
#       by case map16t), which restores the file byte for byte.
#       Compared: `qchain-delta --output=json --rate=history img.qcow2 >
#       /dev/null` vs. `qemu-img map --output=json img.qcow2 > /dev/null`
#       (--rate=history: as case delta).
#       Targets (issue 20): >= 10x, qchain peak RSS < 16 MiB.
#
# commit-raw, commit-qcow2, commit-seq, commit-4k   (issue 4)
#       Base: 1 GiB, raw (commit-qcow2: qcow2, 64 KiB clusters), its first
#       512 MiB written (`write -P 1 0 512M`).  Overlay (qcow2, 64 KiB
#       clusters, backed by the base):
#         commit-raw, commit-qcow2: COMMIT_WRITES = 4096 scattered 64 KiB
#           writes (256 MiB) at distinct cluster-aligned offsets drawn with
#           the LCG above, seeded COMMIT_SEED;
#         commit-seq: one sequential 256 MiB write at 256 MiB;
#         commit-4k: 4096 writes of 4 KiB, each into a distinct 64 KiB
#           cluster (qemu-io leaves the rest of each cluster unwritten).
#       Each timed run starts from fresh copies (PREP, untimed) and ends with
#       `sync BASE`, so both commands are timed until the data is durable.
#       Compared: `qchain-commit TOP` vs. `qemu-img commit -d TOP`.
#       Targets (issue 4): at least 1.5x faster than qemu-img on the
#       scattered cases, at least 5x on commit-4k; commit-seq is reported
#       against qemu-img, and commit-seq-copy holds it against a plain copy
#       of the same bytes (dd, 8 MiB blocks, made durable the same way):
#       within 1.05x (issue 20; 1.25x in issue 4), i.e. speedup >= 0.952,
#       with qchain-commit's peak RSS under 12 MiB (dd's: 9.5 MiB).
#
# commit-raw-copy, commit-4k-floor   (issue 4, no target)
#       The floors of commit-raw and commit-4k on this machine's disk:
#       scatter_copy.c (built with cc) copies listed ranges with pread/pwrite
#       and one fdatasync: the overlay's data clusters (commit-raw-copy), or
#       only the 4 KiB blocks the guest wrote (commit-4k-floor), the least
#       any commit must write.  The ratio to qemu-img that a target asks
#       for is only reachable where qemu-img is that far from the floor.
#
# commit-raw-floor   (issue 4, no target)
#       The device's own floor for commit-raw's bytes: the same 256 MiB
#       written as ONE sequential stream (dd, 8 MiB blocks, from the
#       overlay's file to the base at 384 MiB, over 128 MiB of data and
#       128 MiB of hole, as the scattered commit half overwrites and half
#       allocates), made durable the same way.  No writer of those bytes
#       into this base is faster than that on this disk, so a ratio to
#       qemu-img above (qemu-img time / this time) cannot be reached here.
#
# commit-qcow2-reflink   (issue 20)
#       The images of commit-qcow2 on an XFS loop mount with reflinks: see
#       the case's comment below.  Target: speedup >= 10.
#
# commit-raw-device   (issue 13, no target)
#       The images of commit-raw with the base behind a loop device (the
#       stand-in for an LVM volume: `losetup -f --show`, root only; skipped
#       with the reason otherwise): the overlay re-pointed at the device
#       (`qemu-img rebase -u`), the device restored before every run by
#       writing the pristine base through it.  Compared: `qchain-commit TOP`
#       vs. `qemu-img commit -d TOP` into the same device, both followed
#       by `sync DEVICE`.
#
# commit-multi   (issue 20)
#       Two disks of one VM on two devices: the chain of commit-raw (a
#       copy of its pristine images) on each of two ext4 file systems,
#       mounted by the script (root, losetup, mkfs.ext4; skipped with the
#       reason otherwise) on loop devices whose backing files live each on
#       a tmpfs of its own, and unmounted at exit.  This machine has one
#       physical disk: two loop files on it would share its queue and
#       bandwidth and measure the disk, not the command.  Over tmpfs alone
#       a "device" costs CPU (the loop worker copies every byte), so on a
#       machine with 2 CPUs one commit keeps more than one of them busy
#       (its copy, its writeback, the loop worker: measured 0.3 CPU-s in
#       0.25 s) and two cannot run side by side whatever the command does
#       (measured unthrottled, other jobs on the machine: 1.6-1.7x); real
#       disks cost time, not CPU.  So each device's writes are throttled to
#       MULTI_DEVICE_BPS = 512 MiB/s (a SATA SSD, a fast cloud volume)
#       with blkio.throttle.write_bps_device of the root cgroup (cgroup
#       v1; where it is missing, the devices are left unthrottled and the
#       run says so); the limit is lifted at exit.
#       Compared: `qchain-commit A B` (both disks, one command, one thread
#       each) vs. the slower of `qchain-commit A` and `qchain-commit B`
#       run alone (each timed run: A alone, B alone, the slower counts),
#       each followed by `sync` of its base(s).
#       Target (issue 20): at most 1.2x the slower alone, i.e. speedup
#       >= 0.833.
#
# predict   (issue 21)
#       Does qchain-delta's time hold?  For each commit shape (the images of
#       commit-raw, commit-qcow2, commit-seq, commit-4k, and commit-trim: as
#       commit-raw, every other write `write -z` instead, 2048 data and 2048
#       zero clusters over the raw base: the zeros its calibration samples
#       apart), RUNS times: fresh
#       copies (as those cases prepare them), `qchain-delta --json
#       --rate=auto top.qcow2` (its calibration commits a sample of the
#       delta into scratch files beside the base), a pause of
#       PREDICT_PAUSE s (an operator reads the figure), then the commit
#       timed as in those cases (`qchain-commit top.qcow2 && sync base`).
#       Printed: predicted and actual seconds and predicted/actual, run by
#       run, with the calibration's own time and sample.  Targets (issue
#       21): per shape the median ratio within 0.8-1.25, every run within
#       0.67-1.5; every calibration within 2.5 s and 64 MiB.
# predict-cold   (issue 21)
#       predict with the page cache dropped (`sync; echo 3 >
#       /proc/sys/vm/drop_caches`, root) before qchain-delta and again
#       before the commit: layers and base read from the disk by both, the
#       read side the calibration measures.  The same targets.
#
# sum, sum-plain   (issue 17)
#       Image: `qemu-img create -f qcow2 -o cluster_size=64k img.qcow2 4G`,
#       then SUM_WRITES = 16,384 distinct 64 KiB clusters (1 GiB of data, a
#       quarter of the disk) written with `write -P <1 + i % 255> <offset> 64k`
#       through ONE qemu-io process, at cluster indexes drawn with the LCG
#       above seeded SUM_SEED = 1717 (index = (x >> 15) mod 65,536 of each
#       draw, duplicates skipped), in draw order, so host order does not
#       follow guest order; the rest never written.  Then each data
#       cluster's host bytes (from `qemu-img map`) are overwritten in guest
#       order with 64 KiB of Python's random.Random(SUM_SEED).randbytes, and
#       the same bytes appended to floor.raw (1 GiB, the data back to back).
#       Compared: `qchain-sum img` (blksum's block hash; sum) or
#       `qchain-sum --plain img` (sum-plain, outputs byte-identical)
#             vs. `qemu-img convert -O raw img out.raw; sha256sum out.raw`
#       (what an operator runs today), the raw file removed after each run.
#       Target (issue 17), sum: at most 0.2 of the reference's time, i.e.
#       speedup >= 5.  sum-plain: reported (a stream hash must take in all
#       4 GiB, zeros included).
#
# sum-floor, sum-plain-floor   (issue 17)
#       The floor: hashing the image's 1 GiB of data alone, floor.raw.
#       sum-floor: `qchain-sum img` vs. `qchain-sum -f raw floor.raw` (the
#       same block hash with the same threads, data read in 4 MiB runs).
#       Target (issue 17): within 1.5x of the floor, i.e. speedup >= 0.667.
#       sum-plain-floor: `qchain-sum --plain img` vs. `sha256sum floor.raw`
#       (one stream); reported, no target: the stream over the image is 4
#       GiB long, 3 GiB of it zeros that SHA-256 cannot skip, and how fast
#       sha256sum is depends on its build (coreutils 9.1 of Debian 12 does
#       not use OpenSSL nor the CPU's SHA extensions).
#
# Measurement
# -----------
# Each command runs once untimed (warm-up, page cache; also the output
# comparison), then N times alternating A B A B ...  Wall time is taken with
# bash's $EPOCHREALTIME around the command (microseconds; /usr/bin/time's %e
# has only 10 ms resolution), peak RSS with `/usr/bin/time -f %M` (maxrss of
# the command, KiB; the same figure `/usr/bin/time -v` prints as "Maximum
# resident set size").  Absolute times drift on shared machines; the ratio
# from one run is the figure that counts.
#
# Adding a case
# -------------
# Write `case_<name>`: build the images under "$WORK/<name>" (reuse them when
# the stamp matches, see map_setup), set the argv arrays OURS and REF, and
# optionally PREP (a function run untimed before every timed run, e.g. to
# restore a fresh copy for commands that modify their images), then call
# run_pair with the targets.  Add the name to ALL_CASES.

# Functions are called indirectly ("case_$c", "$PREP"):
# shellcheck disable=SC2317
set -euo pipefail
export LC_ALL=C

ALL_CASES=(map delta check map16t delta16t commit-raw commit-raw-copy commit-raw-floor commit-qcow2 commit-seq commit-seq-copy commit-4k commit-4k-floor commit-raw-device commit-multi commit-qcow2-reflink predict predict-cold sum sum-plain sum-floor sum-plain-floor)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# --- parameters of case map (change the stamp if you change these) ---------
MAP_SIZE=1T
MAP_CLUSTER=65536
MAP_CLUSTERS=20000
MAP_SEED=20240601
# --- parameters of cases map16t, delta16t -----------------------------------
MAP16T_SIZE=16T
MAP16T_CLUSTERS=200000
MAP16T_SEED=20261203

# --- options ----------------------------------------------------------------
BUILD=./build
BIN=
WORK=
RUNS=5
KEEP=0
STRICT=0
CASES=()

die() { printf 'run.sh: %s\n' "$*" >&2; exit 2; }
note() { printf '%s\n' "$*" >&2; }

usage() {
    sed -n '2,/^# Cases/{/^# Cases/d;s/^# \{0,1\}//;p}' "$0"
}

while (($#)); do
    case $1 in
        --build) (($# >= 2)) || die "--build needs a directory"; BUILD=$2; shift 2 ;;
        --build=*) BUILD=${1#*=}; shift ;;
        --bin) (($# >= 2)) || die "--bin needs a directory"; BIN=$2; shift 2 ;;
        --bin=*) BIN=${1#*=}; shift ;;
        --work) (($# >= 2)) || die "--work needs a directory"; WORK=$2; shift 2 ;;
        --work=*) WORK=${1#*=}; shift ;;
        --runs) (($# >= 2)) || die "--runs needs a number"; RUNS=$2; shift 2 ;;
        --runs=*) RUNS=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        --strict) STRICT=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; CASES+=("$@"); break ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) CASES+=("$1"); shift ;;
    esac
done

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs: not a positive number: $RUNS"
((${#CASES[@]})) || CASES=("${ALL_CASES[@]}")
BIN=${BIN:-$BUILD/tools}

# --- prerequisites ----------------------------------------------------------
((BASH_VERSINFO[0] >= 5)) || die "bash >= 5 needed (for \$EPOCHREALTIME)"
for t in qemu-img qemu-io; do
    command -v "$t" >/dev/null || die "$t not found (Debian/Ubuntu: apt-get install qemu-utils)"
done
if [[ ! -x /usr/bin/time ]]; then
    if ((EUID == 0)) && command -v apt-get >/dev/null; then
        note "installing GNU time (/usr/bin/time) with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null ||
            { apt-get update -q >/dev/null &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null; } ||
            die "could not install package 'time'"
    fi
    [[ -x /usr/bin/time ]] ||
        die "/usr/bin/time (GNU time) is missing and this is not root; install package 'time'"
fi

# need_tool NAME: absolute path of a qchain tool, or a clear failure.
need_tool() {
    local p=$BIN/$1
    [[ -x $p ]] || die "$p not found or not executable: build it first
  (cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build --target $1)
  or point --build/--bin at a build tree that has it"
    printf '%s\n' "$(cd "$(dirname "$p")" && pwd)/$1"
}

# --- work dir ---------------------------------------------------------------
LOOPDEV= # a loop device attached by a case, detached at exit
detach_loop() { [[ -z $LOOPDEV ]] || losetup -d "$LOOPDEV" || true; LOOPDEV=; }
UNBACK= # an image a case pointed at a backing file, pointed back at exit
unback() { [[ -z $UNBACK ]] || qemu-img rebase -u -b '' "$UNBACK" || true; UNBACK=; }
# Mounts and loop devices a case set up, undone at exit in reverse order:
# each entry one command (words quoted with printf %q).
UNDO=()
undo_push() { UNDO+=("$(printf '%q ' "$@")"); }
undo_all() {
    local i
    for ((i = ${#UNDO[@]} - 1; i >= 0; i--)); do
        eval "${UNDO[i]}" || note "cleanup failed: ${UNDO[i]}"
    done
    UNDO=()
}
if [[ -z $WORK ]]; then
    WORK=$(mktemp -d /var/tmp/qchain-bench.XXXXXX)
    if ((KEEP)); then
        trap 'detach_loop; unback; undo_all; note "work dir kept: $WORK"' EXIT
    else
        trap 'detach_loop; unback; undo_all; rm -rf -- "$WORK"' EXIT
    fi
else
    mkdir -p -- "$WORK"
    trap 'detach_loop; unback; undo_all' EXIT
fi
WORK=$(cd "$WORK" && pwd)

# --- measurement ------------------------------------------------------------
FAILED=0
TABLE=()
REF2=()

# median/min/max of the numbers on stdin -> "median min max"
stats() {
    sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2;
              printf "%.6f %.6f %.6f\n", m, v[1], v[NR] }'
}

# timed OUTFILE_SECONDS OUTFILE_RSS ARGV...: one run, stdout to /dev/null.
timed() {
    local secs=$1 rss=$2 tf=$WORK/.time.$$ t0 t1
    shift 2
    t0=${EPOCHREALTIME/./}
    if ! /usr/bin/time -f '%M' -o "$tf" "$@" >/dev/null; then
        die "command failed: $* (see its stderr above)"
    fi
    t1=${EPOCHREALTIME/./}
    awk -v d=$((t1 - t0)) 'BEGIN { printf "%.6f\n", d / 1e6 }' >>"$secs"
    tail -n 1 "$tf" >>"$rss"
    rm -f -- "$tf"
}

# run_pair CASE [--min-speedup X] [--max-rss-kib K] [--same-output]
#   Runs OURS and REF (argv arrays) alternately RUNS times, PREP (if set)
#   before each run; records a table block and checks the targets.  With
#   REF2 set too (an argv array), each reference run times REF and REF2
#   one after the other (PREP before each) and counts the slower of the
#   two (its time; the larger peak RSS).
run_pair() {
    local name=$1 min_speedup='' max_rss='' same=0
    shift
    while (($#)); do
        case $1 in
            --min-speedup) min_speedup=$2; shift 2 ;;
            --max-rss-kib) max_rss=$2; shift 2 ;;
            --same-output) same=1; shift ;;
            *) die "run_pair: bad argument $1" ;;
        esac
    done
    local d=$WORK/.res.$name i out_ours out_ref
    rm -rf -- "$d"; mkdir -p -- "$d"

    # Warm-up + output comparison (untimed).
    out_ours=$d/ours.out; out_ref=$d/ref.out
    [[ -z ${PREP:-} ]] || "$PREP"
    "${OURS[@]}" >"$out_ours" || die "command failed: ${OURS[*]}"
    [[ -z ${PREP:-} ]] || "$PREP"
    "${REF[@]}" >"$out_ref" || die "command failed: ${REF[*]}"
    if ((${#REF2[@]})); then
        [[ -z ${PREP:-} ]] || "$PREP"
        "${REF2[@]}" >>"$out_ref" || die "command failed: ${REF2[*]}"
    fi
    local cmp=-
    if ((same)); then
        if cmp -s -- "$out_ours" "$out_ref"; then
            cmp=OK
        else
            cmp=DIFFER
            FAILED=1
            note "[$name] outputs differ; first lines of the diff:"
            diff -- "$out_ref" "$out_ours" | head -n 10 >&2 || true
        fi
    fi

    note "[$name] timing $RUNS x (${LABEL_OURS:-${OURS[0]##*/}} / ${LABEL_REF:-${REF[0]##*/} ${REF[1]:-}}), alternating"
    for ((i = 1; i <= RUNS; i++)); do
        [[ -z ${PREP:-} ]] || "$PREP"
        timed "$d/ours.s" "$d/ours.rss" "${OURS[@]}"
        [[ -z ${PREP:-} ]] || "$PREP"
        if ((${#REF2[@]})); then
            timed "$d/ref1.s" "$d/ref1.rss" "${REF[@]}"
            [[ -z ${PREP:-} ]] || "$PREP"
            timed "$d/ref2.s" "$d/ref2.rss" "${REF2[@]}"
        else
            timed "$d/ref.s" "$d/ref.rss" "${REF[@]}"
        fi
    done
    if ((${#REF2[@]})); then # the slower of the two, run by run
        paste "$d/ref1.s" "$d/ref2.s" | awk '{ print ($1 > $2) ? $1 : $2 }' >"$d/ref.s"
        paste "$d/ref1.rss" "$d/ref2.rss" | awk '{ print ($1 > $2) ? $1 : $2 }' >"$d/ref.rss"
    fi

    local mo omin omax mr rmin rmax rss_o rss_r _
    read -r mo omin omax <<<"$(stats <"$d/ours.s")"
    read -r mr rmin rmax <<<"$(stats <"$d/ref.s")"
    read -r rss_o _ <<<"$(stats <"$d/ours.rss")"
    read -r rss_r _ <<<"$(stats <"$d/ref.rss")"
    local lo=${LABEL_OURS:-${OURS[0]##*/}} lr=${LABEL_REF:-"${REF[0]##*/} ${REF[1]:-}"}
    TABLE+=("$(printf '%-8s %-16s %4d %10.4f %10.4f %10.4f %12.0f' \
        "$name" "$lo" "$RUNS" "$mo" "$omin" "$omax" "$rss_o")")
    TABLE+=("$(printf '%-8s %-16s %4d %10.4f %10.4f %10.4f %12.0f' \
        "$name" "$lr" "$RUNS" "$mr" "$rmin" "$rmax" "$rss_r")")

    local speed ratio verdict
    speed=$(awk -v a="$mr" -v b="$mo" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
    ratio=$(awk -v a="$mo" -v b="$mr" 'BEGIN { printf "%.3f", (b > 0) ? a / b : 0 }')
    local rn=qemu-img
    [[ -z ${LABEL_REF:-} || $LABEL_REF == qemu-img* ]] || rn=${LABEL_REF%% *}
    local line="  $name: time ours/$rn = $ratio, speedup $rn/ours = ${speed}x"
    if [[ -n $min_speedup ]]; then
        if awk -v s="$speed" -v t="$min_speedup" 'BEGIN { exit !(s >= t) }'; then
            verdict=MET
        else
            verdict="NOT MET"; FAILED=1
        fi
        line+=" (target >= ${min_speedup}x: $verdict)"
    fi
    TABLE+=("$line")
    line=$(printf '  %s: peak RSS ours = %.0f KiB, %s = %.0f KiB' "$name" "$rss_o" "$rn" "$rss_r")
    if [[ -n $max_rss ]]; then
        if awk -v r="$rss_o" -v t="$max_rss" 'BEGIN { exit !(r < t) }'; then
            verdict=MET
        else
            verdict="NOT MET"; FAILED=1
        fi
        line+=" (target < $max_rss KiB: $verdict)"
    fi
    TABLE+=("$line")
    ((same)) && TABLE+=("  $name: outputs byte-identical: $cmp")
    TABLE+=("")
    unset PREP LABEL_OURS LABEL_REF
    REF2=()
}

# --- case map ---------------------------------------------------------------
# scatter_setup NAME SIZE BITS COUNT SEED: $WORK/NAME/img.qcow2, a qcow2 image
# of SIZE (64 KiB clusters, 2^BITS of them) with COUNT distinct scattered
# clusters written through one qemu-io process (see case map in the header),
# reused while $WORK/NAME/stamp matches.
scatter_setup() {
    local name=$1 size=$2 bits=$3 count=$4 seed=$5
    local dir=$WORK/$name img=$WORK/$name/img.qcow2
    local stamp="map size=$size clusters=$count seed=$seed v1"
    ((bits == 24)) || stamp+=" bits=$bits"
    mkdir -p -- "$dir"
    if [[ -f $img && -f $dir/stamp && $(<"$dir/stamp") == "$stamp" ]]; then
        note "[$name] reusing $img"
        return
    fi
    rm -f -- "$img" "$dir/stamp"
    note "[$name] building $img: $size, $count scattered 64 KiB clusters (seed $seed)"

    # Command script: one `write` per distinct pseudo-random cluster.  The
    # index takes the 15 high bits of one draw and the BITS-15 high bits of
    # the next.
    local x=$seed n=0 hi lo c lowbits=$((bits - 15))
    local -A seen=()
    {
        while ((n < count)); do
            x=$(((1103515245 * x + 12345) & 0x7fffffff)); hi=$((x >> 16))
            x=$(((1103515245 * x + 12345) & 0x7fffffff)); lo=$((x >> (31 - lowbits)))
            c=$(((hi << lowbits | lo) % (1 << bits)))
            [[ -z ${seen[$c]:-} ]] || continue
            seen[$c]=1
            printf 'write -P %d %d 64k\n' $((1 + n % 255)) $((c * MAP_CLUSTER))
            n=$((n + 1))
        done
        printf 'quit\n'
    } >"$dir/cmds"

    qemu-img create -q -f qcow2 -o "cluster_size=$MAP_CLUSTER" "$img" "$size"
    local t0=$SECONDS
    # -t unsafe: no flush per metadata update (the same image, made in
    # minutes instead of hours for the 200,000 writes of map16t).
    qemu-io -t unsafe -f qcow2 "$img" <"$dir/cmds" >"$dir/qemu-io.log" 2>&1 ||
        die "qemu-io failed, see $dir/qemu-io.log"
    if grep -q -i 'error\|failed' "$dir/qemu-io.log"; then
        die "qemu-io reported errors, see $dir/qemu-io.log"
    fi
    # Every write allocates exactly one cluster; check says so.
    local alloc
    alloc=$(qemu-img check "$img" | sed -n 's|^\([0-9]*\)/[0-9]* = .* allocated.*|\1|p')
    [[ $alloc == "$count" ]] ||
        die "image has ${alloc:-?} allocated clusters, expected $count"
    note "[$name] built in $((SECONDS - t0)) s, $(du -h --apparent-size "$img" | cut -f1) file"
    printf '%s\n' "$stamp" >"$dir/stamp"
}

map_setup() { scatter_setup map "$MAP_SIZE" 24 "$MAP_CLUSTERS" "$MAP_SEED"; }
map16t_setup() { scatter_setup map16t "$MAP16T_SIZE" 28 "$MAP16T_CLUSTERS" "$MAP16T_SEED"; }

case_map() {
    local qmap
    qmap=$(need_tool qchain-map)
    map_setup
    local img=$WORK/map/img.qcow2
    OURS=("$qmap" --output=json "$img")
    REF=(qemu-img map --output=json "$img")
    run_pair map --min-speedup 4 --max-rss-kib 16384 --same-output
}

# --- case delta -------------------------------------------------------------
case_delta() {
    local qd dir=$WORK/delta
    qd=$(need_tool qchain-delta)
    map_setup
    mkdir -p -- "$dir"
    if [[ ! -f $dir/stamp || $(<"$dir/stamp") != "$(<"$WORK/map/stamp") delta v1" ]]; then
        rm -f -- "$dir/base.raw" "$dir/overlay.qcow2"
        qemu-img create -q -f raw "$dir/base.raw" "$MAP_SIZE"
        cp --sparse=always -- "$WORK/map/img.qcow2" "$dir/overlay.qcow2"
        qemu-img rebase -u -b base.raw -F raw "$dir/overlay.qcow2"
        printf '%s delta v1\n' "$(<"$WORK/map/stamp")" >"$dir/stamp"
    fi
    OURS=("$qd" --output=json --rate=history "$dir/overlay.qcow2")
    REF=(qemu-img map --output=json "$dir/overlay.qcow2")
    run_pair delta --min-speedup 4 --max-rss-kib 16384
}

# --- cases map16t, delta16t -------------------------------------------------
# set_backing IMG [NAME FORMAT]: IMG names backing file NAME (relative to
# IMG's directory) of FORMAT, or none without NAME; `qemu-img rebase -u`
# rewrites the header only, and dropping the name again restores the file
# byte for byte.
set_backing() {
    local img=$1 want=${2:-} fmt=${3:-} have
    have=$(qemu-img info -U --output=json "$img" |
           sed -n 's/^ *"backing-filename": "\(.*\)",\{0,1\}$/\1/p')
    [[ $have == "$want" ]] && return
    if [[ -z $want ]]; then
        qemu-img rebase -u -b '' "$img"
    else
        qemu-img rebase -u -b "$want" -F "$fmt" "$img"
    fi
}

case_map16t() {
    local qmap
    qmap=$(need_tool qchain-map)
    map16t_setup
    local img=$WORK/map16t/img.qcow2
    set_backing "$img"
    OURS=("$qmap" --output=json "$img")
    REF=(qemu-img map --output=json "$img")
    run_pair map16t --min-speedup 10 --max-rss-kib 16384 --same-output
}

case_delta16t() {
    local qd img=$WORK/map16t/img.qcow2
    qd=$(need_tool qchain-delta)
    map16t_setup
    # qcow2, not raw: ext4 holds no 16 TiB file
    [[ -f $WORK/map16t/base.qcow2 ]] ||
        qemu-img create -q -f qcow2 "$WORK/map16t/base.qcow2" "$MAP16T_SIZE"
    # The map16t image itself, pointed at the base for the case's length
    # (a copy would take another 15 GiB of disk).
    UNBACK=$img
    set_backing "$img" base.qcow2 qcow2
    OURS=("$qd" --output=json --rate=history "$img")
    REF=(qemu-img map --output=json "$img")
    run_pair delta16t --min-speedup 10 --max-rss-kib 16384
    unback
}

# --- case check -------------------------------------------------------------
case_check() {
    local qcheck
    qcheck=$(need_tool qchain-check)
    map_setup
    local img=$WORK/map/img.qcow2
    OURS=("$qcheck" --output=json "$img")
    REF=(qemu-img check --output=json "$img")
    run_pair check --min-speedup 5 --max-rss-kib 16384
}

# --- cases commit-* ---------------------------------------------------------
COMMIT_WRITES=4096
COMMIT_SEED=4242

# commit_setup NAME BASEFMT KIND: pristine base + overlay in $WORK/NAME/pristine
commit_setup() {
    local name=$1 fmt=$2 kind=$3 dir=$WORK/$1
    local stamp="$name fmt=$fmt kind=$kind writes=$COMMIT_WRITES seed=$COMMIT_SEED v1"
    mkdir -p -- "$dir/pristine"
    if [[ -f $dir/stamp && $(<"$dir/stamp") == "$stamp" ]]; then
        note "[$name] reusing $dir/pristine"
        return
    fi
    note "[$name] building a 1 GiB $fmt base and a $kind overlay"
    rm -f -- "$dir/pristine/"* "$dir/stamp"
    (
        cd "$dir/pristine"
        if [[ $fmt == raw ]]; then
            qemu-img create -q -f raw base.img 1G
        else
            qemu-img create -q -f qcow2 -o cluster_size=64k base.img 1G
        fi
        qemu-io -f "$fmt" -c 'write -P 1 0 512M' base.img >/dev/null
        qemu-img create -q -f qcow2 -b base.img -F "$fmt" top.qcow2
        local x=$COMMIT_SEED n=0 c
        local -A seen=()
        {
            case $kind in
            seq) printf 'write -P 2 256M 256M\n' ;;
            *)
                while ((n < COMMIT_WRITES)); do
                    x=$(((1103515245 * x + 12345) & 0x7fffffff))
                    c=$(((x >> 8) % 16384))   # 64 KiB clusters of 1 GiB
                    [[ -z ${seen[$c]:-} ]] || continue
                    seen[$c]=1
                    if [[ $kind == 4k ]]; then
                        printf 'write -P %d %d 4k\n' $((2 + n % 200)) $((c * 65536))
                    elif [[ $kind == trim ]] && ((n % 2)); then
                        printf 'write -z %d 64k\n' $((c * 65536))
                    else
                        printf 'write -P %d %d 64k\n' $((2 + n % 200)) $((c * 65536))
                    fi
                    n=$((n + 1))
                done ;;
            esac
            printf 'quit\n'
        } >cmds
        qemu-io -f qcow2 top.qcow2 <cmds >/dev/null
    )
    printf '%s\n' "$stamp" >"$dir/stamp"
}

commit_prep() {
    local dir=$WORK/$COMMIT_CASE
    rm -f -- "$dir/base.img" "$dir/top.qcow2" "$dir/base.img.qchain-"*
    cp --sparse=always -- "$dir/pristine/base.img" "$dir/base.img"
    cp --sparse=always -- "$dir/pristine/top.qcow2" "$dir/top.qcow2"
    sync -f "$dir/base.img"
    sleep 0.3 # let the file system finish the previous run's discards
}

commit_case() { # name basefmt kind min-speedup
    local qc
    qc=$(need_tool qchain-commit)
    COMMIT_CASE=$1
    commit_setup "$1" "$2" "$3"
    local dir=$WORK/$1
    OURS=(bash -c '"$0" "$1" >/dev/null && sync "$2"' "$qc" "$dir/top.qcow2" "$dir/base.img")
    REF=(bash -c 'qemu-img commit -q -d "$0" && sync "$1"' "$dir/top.qcow2" "$dir/base.img")
    PREP=commit_prep
    LABEL_OURS=qchain-commit
    LABEL_REF="qemu-img commit"
    if [[ -n $4 ]]; then
        run_pair "$1" --min-speedup "$4"
    else
        run_pair "$1"
    fi
}

case_commit-raw() { commit_case commit-raw raw scattered 1.5; }
case_commit-qcow2() { commit_case commit-qcow2 qcow2 scattered 1.5; }
case_commit-seq() { commit_case commit-seq raw seq ""; }
case_commit-4k() { commit_case commit-4k raw 4k 5; }

# commit-seq-copy: qchain-commit of the commit-seq images against a plain
# copy of the same bytes (dd from the overlay's data clusters, which one
# sequential write left contiguous, to the base at the guest offset), both
# made durable.  Target (issue 20): within 1.05x of the copy, i.e. copy
# time / ours >= 0.952, peak RSS under 12 MiB.
# commit-raw-copy, commit-4k-floor: what the device allows.  The same
# images as commit-raw and commit-4k; the reference is scatter_copy.c
# (built here with cc): pread/pwrite of listed ranges, one fdatasync.
#   commit-raw-copy: the overlay's data clusters (qemu-img map, depth 0)
#     copied to their guest offsets in the base: a plain scattered copy of
#     the same 256 MiB, the floor of commit-raw;
#   commit-4k-floor: only the 4096 blocks of 4 KiB the guest wrote (the
#     first 4 KiB of each allocated cluster), the least any commit must
#     write: the floor of commit-4k.
# No target: the figures say how far from the floor qchain-commit is.
scatter_ranges() { # image mode(all|first4k): "src dst len" per line
    qemu-img map --output=json "$1" | python3 -c '
import json, sys
mode = sys.argv[1]
for x in json.load(sys.stdin):
    if x["depth"] != 0 or not x["data"]:
        continue
    if mode == "all":
        print(x["offset"], x["start"], x["length"])
    else:
        for c in range(x["start"], x["start"] + x["length"], 65536):
            print(x["offset"] + c - x["start"], c, 4096)' "$2"
}
scatter_case() { # name source-case kind mode
    local qc dir=$WORK/$2 sc=$WORK/scatter_copy
    qc=$(need_tool qchain-commit)
    COMMIT_CASE=$2
    commit_setup "$2" raw "$3"
    if [[ ! -x $sc || $sc -ot $HERE/scatter_copy.c ]]; then
        cc -O2 -o "$sc" "$HERE/scatter_copy.c" || die "cannot build scatter_copy"
    fi
    scatter_ranges "$dir/pristine/top.qcow2" "$4" >"$dir/ranges.$4"
    OURS=(bash -c '"$0" "$1" >/dev/null && sync "$2"' "$qc" "$dir/top.qcow2" "$dir/base.img")
    REF=(bash -c '"$0" "$1" "$2" <"$3" && sync "$2"' "$sc" "$dir/top.qcow2" \
         "$dir/base.img" "$dir/ranges.$4")
    PREP=commit_prep
    LABEL_OURS=qchain-commit
    LABEL_REF="scatter_copy"
    run_pair "$1"
}
case_commit-raw-copy() { scatter_case commit-raw-copy commit-raw scattered all; }
case_commit-4k-floor() { scatter_case commit-4k-floor commit-4k 4k first4k; }

case_commit-raw-floor() {
    local qc dir=$WORK/commit-raw off
    qc=$(need_tool qchain-commit)
    COMMIT_CASE=commit-raw
    commit_setup commit-raw raw scattered
    # host offset of the overlay's first data cluster; its data clusters
    # follow one another (qemu-io allocated them in write order)
    off=$(qemu-img map --output=json "$dir/pristine/top.qcow2" | python3 -c '
import json, sys
print(min(x["offset"] for x in json.load(sys.stdin) if x["depth"] == 0 and x["data"]))')
    OURS=(bash -c '"$0" "$1" >/dev/null && sync "$2"' "$qc" "$dir/top.qcow2" "$dir/base.img")
    REF=(bash -c 'dd if="$0" of="$1" bs=8M iflag=skip_bytes,count_bytes \
             oflag=seek_bytes conv=notrunc skip="$2" seek=$((384 << 20)) \
             count=$((256 << 20)) status=none && sync "$1"' \
         "$dir/top.qcow2" "$dir/base.img" "$off")
    PREP=commit_prep
    LABEL_OURS=qchain-commit
    LABEL_REF="dd (sequential)"
    run_pair commit-raw-floor
}

case_commit-seq-copy() {
    local qc dir=$WORK/commit-seq off len
    qc=$(need_tool qchain-commit)
    COMMIT_CASE=commit-seq
    commit_setup commit-seq raw seq
    # the overlay's one data extent: guest 256 MiB at host offset $off
    read -r off len < <(qemu-img map --output=json "$dir/pristine/top.qcow2" |
        python3 -c 'import json,sys
e=[x for x in json.load(sys.stdin) if x["depth"] == 0 and x["data"]]
assert len(e) == 1 and e[0]["start"] == 256 << 20, e
print(e[0]["offset"], e[0]["length"])')
    OURS=(bash -c '"$0" "$1" >/dev/null && sync "$2"' "$qc" "$dir/top.qcow2" "$dir/base.img")
    REF=(bash -c 'dd if="$0" of="$1" bs=8M iflag=skip_bytes,count_bytes \
             oflag=seek_bytes conv=notrunc skip="$2" seek=$((256 << 20)) \
             count="$3" status=none && sync "$1"' \
         "$dir/top.qcow2" "$dir/base.img" "$off" "$len")
    PREP=commit_prep
    LABEL_OURS=qchain-commit
    LABEL_REF="plain copy (dd)"
    run_pair commit-seq-copy --min-speedup 0.952 --max-rss-kib 12288
}

device_prep() {
    local dir=$WORK/commit-raw
    rm -f -- "$dir/dtop.qcow2" "$dir/"*.qchain-co*
    dd if="$dir/pristine/base.img" of="$LOOPDEV" bs=8M conv=fsync status=none
    cp --sparse=always -- "$dir/pristine/top.qcow2" "$dir/dtop.qcow2"
    qemu-img rebase -u -f qcow2 -b "$LOOPDEV" -F raw "$dir/dtop.qcow2"
    sleep 0.3
}

case_commit-raw-device() {
    local qc dir=$WORK/commit-raw
    if ((EUID != 0)) || ! command -v losetup >/dev/null; then
        note "[commit-raw-device] skipped: attaching a loop device needs root and losetup"
        return
    fi
    qc=$(need_tool qchain-commit)
    COMMIT_CASE=commit-raw
    commit_setup commit-raw raw scattered
    truncate -s 1G "$dir/dev-base.img"
    LOOPDEV=$(losetup -f --show "$dir/dev-base.img") ||
        { note "[commit-raw-device] skipped: cannot attach a loop device"; LOOPDEV=; return; }
    OURS=(bash -c '"$0" "$1" >/dev/null && sync "$2"' "$qc" "$dir/dtop.qcow2" "$LOOPDEV")
    REF=(bash -c 'qemu-img commit -q -d "$0" && sync "$1"' "$dir/dtop.qcow2" "$LOOPDEV")
    PREP=device_prep
    LABEL_OURS=qchain-commit
    LABEL_REF="qemu-img commit"
    run_pair commit-raw-device
    detach_loop
    rm -f -- "$dir/dev-base.img"
}

# --- case commit-qcow2-reflink ----------------------------------------------
# The images of commit-qcow2 (a 1 GiB qcow2 base with its first 512 MiB
# written, an overlay with 4096 scattered 64 KiB clusters) copied before
# every run onto an XFS file system made with `mkfs.xfs -m reflink=1` in a
# 4 GiB file under the work dir and loop-mounted there (root; skipped with
# the reason otherwise), unmounted when the case ends (or at exit).
# Compared: `qchain-commit TOP` (which clones the overlay's clusters into
# new base clusters) vs.
# `qemu-img commit -d TOP`, both followed by `sync BASE`.  Target (issue
# 20): at most 0.1 of qemu-img's time, i.e. speedup >= 10.
XFSMNT= # where commit-qcow2-reflink mounted its file system
reflink_prep() {
    local p=$WORK/commit-qcow2/pristine
    rm -f -- "$XFSMNT/base.img" "$XFSMNT/top.qcow2" "$XFSMNT/base.img.qchain-"*
    cp --reflink=never -- "$p/base.img" "$XFSMNT/base.img"
    cp --reflink=never -- "$p/top.qcow2" "$XFSMNT/top.qcow2"
    sync -f "$XFSMNT"
    sleep 0.3
}
case_commit-qcow2-reflink() {
    local qc why= img=$WORK/xfs-reflink.img mnt=$WORK/xfs-reflink
    if ((EUID != 0)); then why="mounting a file system needs root"
    elif ! command -v mkfs.xfs >/dev/null; then why="mkfs.xfs missing (package xfsprogs)"
    fi
    if [[ -z $why ]]; then
        rm -f -- "$img"; truncate -s 4G "$img"; mkdir -p -- "$mnt"
        if ! mkfs.xfs -q -f -m reflink=1 "$img" 2>"$WORK/.mkfs.err"; then
            why="mkfs.xfs failed: $(head -c 200 "$WORK/.mkfs.err")"
        elif ! mount -o loop "$img" "$mnt" 2>"$WORK/.mkfs.err"; then
            why="cannot mount a loop device here: $(head -c 200 "$WORK/.mkfs.err")"
        else
            XFSMNT=$mnt
            undo_push umount "$mnt"
        fi
    fi
    if [[ -n $why ]]; then
        note "[commit-qcow2-reflink] skipped: $why"
        rm -f -- "$img"
        return
    fi
    qc=$(need_tool qchain-commit)
    commit_setup commit-qcow2 qcow2 scattered
    OURS=(bash -c '"$0" "$1" >/dev/null && sync "$2"' "$qc" "$XFSMNT/top.qcow2" "$XFSMNT/base.img")
    REF=(bash -c 'qemu-img commit -q -d "$0" && sync "$1"' "$XFSMNT/top.qcow2" "$XFSMNT/base.img")
    PREP=reflink_prep
    LABEL_OURS=qchain-commit
    LABEL_REF="qemu-img commit"
    run_pair commit-qcow2-reflink --min-speedup 10
    undo_all
    rm -f -- "$img"
}

# --- case commit-multi ------------------------------------------------------
# Two file systems, each on its own device: ext4 on a loop device whose
# backing file lives on a tmpfs of its own, its writes throttled to
# MULTI_DEVICE_BPS (see the case's comment in the header for why).
MULTI_FS_SIZE=1536M  # ext4 size: a base (768 MiB after the commit) + a top
MULTI_TMPFS_SIZE=1600M
MULTI_DEVICE_BPS=$((512 << 20))
MULTI_THROTTLE=/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device
MULTI_THROTTLED=0

# multi_mount: mount fs1 and fs2 under $WORK/commit-multi; 1 (and a note
# saying why) where that is impossible.
multi_mount() {
    local dir=$WORK/commit-multi k t f dev why=
    ((EUID == 0)) || why="mounting file systems needs root"
    for t in losetup mkfs.ext4 mount umount; do
        [[ -n $why ]] || command -v "$t" >/dev/null || why="$t not found"
    done
    if [[ -n $why ]]; then
        note "[commit-multi] skipped: $why"
        return 1
    fi
    for k in 1 2; do
        t=$dir/dev$k f=$dir/fs$k
        mkdir -p -- "$t" "$f"
        if ! mount -t tmpfs -o "size=$MULTI_TMPFS_SIZE" tmpfs "$t"; then
            why="cannot mount a tmpfs on $t"; break
        fi
        undo_push umount "$t"
        truncate -s "$MULTI_FS_SIZE" "$t/disk"
        if ! dev=$(losetup -f --show "$t/disk"); then
            why="cannot attach a loop device"; break
        fi
        undo_push losetup -d "$dev"
        multi_throttle "$dev"
        if ! mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$dev"; then
            why="mkfs.ext4 failed on $dev"; break
        fi
        if ! mount -t ext4 "$dev" "$f"; then
            why="cannot mount $dev (ext4) on $f"; break
        fi
        undo_push umount "$f"
    done
    if [[ -n $why ]]; then
        undo_all
        note "[commit-multi] skipped: $why"
        return 1
    fi
    note "[commit-multi] ext4 on loop devices over tmpfs: $dir/fs1 $dir/fs2"
    if ((MULTI_THROTTLED == 2)); then
        note "[commit-multi] writes to each device throttled to $((MULTI_DEVICE_BPS >> 20)) MiB/s"
    else
        note "[commit-multi] devices NOT throttled (no writable $MULTI_THROTTLE):" \
             "the figure measures the CPUs more than the devices"
    fi
}

# multi_throttle DEV: limit the writes DEV takes to MULTI_DEVICE_BPS, in
# the root blkio cgroup (cgroup v1), which every bio without a cgroup of
# its own (the flusher's writeback included) is charged to; the limit is
# lifted at exit, as the device outlives the case.
multi_throttle() {
    local mm
    [[ -w $MULTI_THROTTLE ]] || return 0
    mm=$(<"/sys/block/${1##*/}/dev") || return 0
    if printf '%s %s\n' "$mm" "$MULTI_DEVICE_BPS" >"$MULTI_THROTTLE" 2>/dev/null; then
        undo_push bash -c 'printf "%s 0\n" "$0" >"$1"' "$mm" "$MULTI_THROTTLE"
        MULTI_THROTTLED=$((MULTI_THROTTLED + 1))
    fi
}

multi_prep() {
    local k f src=$WORK/commit-raw/pristine
    for k in 1 2; do
        f=$WORK/commit-multi/fs$k
        rm -f -- "$f/base.img" "$f/top.qcow2" "$f/base.img.qchain-"*
        cp --sparse=always -- "$src/base.img" "$f/base.img"
        cp --sparse=always -- "$src/top.qcow2" "$f/top.qcow2"
        sync -f "$f/base.img"
    done
    sleep 0.3
}

case_commit-multi() {
    local qc f1=$WORK/commit-multi/fs1 f2=$WORK/commit-multi/fs2
    qc=$(need_tool qchain-commit)
    COMMIT_CASE=commit-raw
    commit_setup commit-raw raw scattered
    multi_mount || return 0
    OURS=(bash -c '"$0" "$1" "$2" >/dev/null && sync "$3" "$4"' "$qc" \
          "$f1/top.qcow2" "$f2/top.qcow2" "$f1/base.img" "$f2/base.img")
    REF=(bash -c '"$0" "$1" >/dev/null && sync "$2"' "$qc" "$f1/top.qcow2" "$f1/base.img")
    REF2=(bash -c '"$0" "$1" >/dev/null && sync "$2"' "$qc" "$f2/top.qcow2" "$f2/base.img")
    PREP=multi_prep
    LABEL_OURS="qchain-commit A B"
    LABEL_REF="slower of A, B alone"
    run_pair commit-multi --min-speedup 0.833
    undo_all
}

# --- cases sum, sum-plain, sum-floor, sum-plain-floor ----------------------
SUM_SIZE=4G
SUM_DISK_CLUSTERS=65536               # 4 GiB / 64 KiB
SUM_WRITES=16384                      # 1 GiB of data
SUM_SEED=1717

# The image (write order = host order, guest offsets scattered), its data
# clusters then overwritten in place with pseudo-random bytes, and
# floor.raw: the same 1 GiB of data back to back, in guest order.
sum_setup() {
    local dir=$WORK/sum img=$WORK/sum/img.qcow2
    local stamp="sum size=$SUM_SIZE writes=$SUM_WRITES seed=$SUM_SEED random+floor v2"
    mkdir -p -- "$dir"
    if [[ -f $img && -f $dir/floor.raw && -f $dir/stamp &&
          $(<"$dir/stamp") == "$stamp" ]]; then
        note "[sum] reusing $img"
        return
    fi
    rm -f -- "$img" "$dir/floor.raw" "$dir/stamp"
    note "[sum] building $img: $SUM_SIZE, $SUM_WRITES scattered 64 KiB clusters (seed $SUM_SEED)"
    qemu-img create -q -f qcow2 -o cluster_size=64k "$img" "$SUM_SIZE"
    local x=$SUM_SEED n=0 c t0=$SECONDS
    local -A seen=()
    {
        while ((n < SUM_WRITES)); do
            x=$(((1103515245 * x + 12345) & 0x7fffffff))
            c=$(((x >> 15) % SUM_DISK_CLUSTERS))
            [[ -z ${seen[$c]:-} ]] || continue
            seen[$c]=1
            printf 'write -P %d %d 64k\n' $((1 + n % 255)) $((c * 65536))
            n=$((n + 1))
        done
        printf 'quit\n'
    } | qemu-io -f qcow2 "$img" >"$dir/qemu-io.log" 2>&1 ||
        die "qemu-io failed, see $dir/qemu-io.log"
    if grep -q -i 'error\|failed' "$dir/qemu-io.log"; then
        die "qemu-io reported errors, see $dir/qemu-io.log"
    fi
    local alloc
    alloc=$(qemu-img check "$img" | sed -n 's|^\([0-9]*\)/[0-9]* = .* allocated.*|\1|p')
    [[ $alloc == "$SUM_WRITES" ]] ||
        die "image has ${alloc:-?} allocated clusters, expected $SUM_WRITES"
    # Pseudo-random content (a fixed seed): each data cluster's host bytes
    # overwritten in guest order, the same bytes appended to floor.raw.
    qemu-img map --output=json "$img" | python3 -c '
import json, random, sys
img, floor, seed, want = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(seed)
n = 0
with open(img, "r+b") as q, open(floor, "wb") as f:
    for x in json.load(sys.stdin):
        if not x["data"]:
            continue
        for c in range(0, x["length"], 65536):
            b = rnd.randbytes(65536)
            q.seek(x["offset"] + c)
            q.write(b)
            f.write(b)
            n += 1
if n != want:
    sys.exit("%d data clusters mapped, expected %d" % (n, want))
' "$img" "$dir/floor.raw" "$SUM_SEED" "$SUM_WRITES" || die "cannot fill $img"
    note "[sum] built in $((SECONDS - t0)) s"
    printf '%s\n' "$stamp" >"$dir/stamp"
}

# sum_pair NAME [QCHAIN-SUM OPTION...]: OURS is qchain-sum of the image,
# REF qemu-img convert + sha256sum.
sum_pair() {
    local name=$1 qs img=$WORK/sum/img.qcow2
    shift
    qs=$(need_tool qchain-sum)
    sum_setup
    OURS=("$qs" "$@" "$img")
    # sha256sum's line names the image, as qchain-sum's does
    REF=(bash -c 'rm -f "$1" && qemu-img convert -O raw "$0" "$1" &&
                  sha256sum < "$1" | sed "s|  -\$|  $0|" && rm -f "$1"' \
         "$img" "$WORK/sum/out.raw")
    LABEL_OURS="qchain-sum${1:+ $1}"
    LABEL_REF="qemu-img convert+sha256sum"
}
case_sum() {
    sum_pair sum
    run_pair sum --min-speedup 5
}
case_sum-plain() {
    sum_pair sum-plain --plain
    run_pair sum-plain --same-output
}
# The floors: the image's 1 GiB of data alone (floor.raw), hashed the same
# way: by qchain-sum -f raw (same block hash, same threads), and for
# --plain by sha256sum (one stream).
case_sum-floor() {
    sum_pair sum-floor
    REF=("${OURS[0]}" -f raw "$WORK/sum/floor.raw")
    LABEL_REF="floor (qchain-sum -f raw floor.raw)"
    run_pair sum-floor --min-speedup 0.667
}
case_sum-plain-floor() {
    sum_pair sum-plain-floor --plain
    REF=(sha256sum "$WORK/sum/floor.raw")
    LABEL_REF="floor (sha256sum floor.raw)"
    run_pair sum-plain-floor
}

# --- case predict -----------------------------------------------------------
PREDICT_PAUSE=1
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
case_predict() { predict_case predict 0; }
case_predict-cold() {
    [[ -w /proc/sys/vm/drop_caches ]] || die "predict-cold: dropping the page cache needs root"
    predict_case predict-cold 1
}
predict_case() { # name cold(0|1)
    local name=$1 cold=$2 qc qd shape fmt kind dir i t0 t1 actual
    qc=$(need_tool qchain-commit)
    qd=$(need_tool qchain-delta)
    local res=$WORK/.res.$name
    rm -rf -- "$res"; mkdir -p -- "$res"
    for shape in commit-raw:raw:scattered commit-qcow2:qcow2:scattered \
                 commit-seq:raw:seq commit-4k:raw:4k commit-trim:raw:trim; do
        IFS=: read -r COMMIT_CASE fmt kind <<<"$shape"
        commit_setup "$COMMIT_CASE" "$fmt" "$kind"
        dir=$WORK/$COMMIT_CASE
        note "[$name] $COMMIT_CASE: $RUNS x (qchain-delta --rate=auto, then qchain-commit)"
        for ((i = 1; i <= RUNS; i++)); do
            commit_prep
            ((cold == 0)) || drop_caches
            "$qd" --json --rate=auto "$dir/top.qcow2" >"$res/$COMMIT_CASE.$i.json" ||
                die "qchain-delta failed on $dir/top.qcow2"
            ((cold == 0)) || drop_caches
            sleep "$PREDICT_PAUSE"
            t0=${EPOCHREALTIME/./}
            "$qc" "$dir/top.qcow2" >/dev/null || die "qchain-commit failed"
            sync "$dir/base.img"
            t1=${EPOCHREALTIME/./}
            actual=$(awk -v d=$((t1 - t0)) 'BEGIN { printf "%.6f", d / 1e6 }')
            printf '%s %d %s %s\n' "$COMMIT_CASE" "$i" "$actual" \
                "$res/$COMMIT_CASE.$i.json" >>"$res/runs"
        done
    done
    local out
    out=$(python3 - "$res/runs" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    shape, i, actual, path = line.split()
    d = json.load(open(path))
    assert d["rate-source"] == "measured", d
    rows.setdefault(shape, []).append((int(i), float(actual), d))
failed = False
print("  %-13s %3s %10s %10s %7s %8s %10s %6s" % ("shape", "run", "predicted", "actual",
      "ratio", "calib_s", "sample_MiB", "runs"))
for shape, rs in rows.items():
    ratios = []
    for i, actual, d in rs:
        r = d["estimated-seconds"] / actual
        ratios.append(r)
        c = d["calibration"]
        bad = not (0.67 <= r <= 1.5) or d["calibration-seconds"] > 2.5 or \
              c["sample-bytes"] > 64 << 20
        failed |= bad
        print("  %-13s %3d %10.4f %10.4f %7.3f %8.3f %10.1f %6d%s" % (
              shape, i, d["estimated-seconds"], actual, r, d["calibration-seconds"],
              c["sample-bytes"] / 1048576, c["sample-runs"], "  OUT OF BOUNDS" if bad else ""))
    m = statistics.median(ratios)
    ok = 0.8 <= m <= 1.25
    failed |= not ok
    print("  %s: median predicted/actual = %.3f, range %.3f-%.3f (target median 0.8-1.25, "
          "runs 0.67-1.5: %s)" % (shape, m, min(ratios), max(ratios),
                                   "MET" if ok and all(0.67 <= r <= 1.5 for r in ratios) else "NOT MET"))
print("FAILED" if failed else "ALL MET")
PY
) || die "predict: cannot read the results"
    local how="pause ${PREDICT_PAUSE} s"
    ((cold == 0)) || how+=", page cache dropped before each"
    TABLE+=("$name: qchain-delta --rate=auto against the real commit ($how)")
    while IFS= read -r line; do
        [[ $line == FAILED ]] && { FAILED=1; continue; }
        [[ $line == "ALL MET" ]] && continue
        TABLE+=("$line")
    done <<<"$out"
    TABLE+=("")
}

# --- main -------------------------------------------------------------------
for c in "${CASES[@]}"; do
    declare -F "case_$c" >/dev/null || die "unknown case: $c (known: ${ALL_CASES[*]})"
done
for c in "${CASES[@]}"; do
    "case_$c"
done

printf '\n%-8s %-16s %4s %10s %10s %10s %12s\n' \
    case command runs median_s min_s max_s med_rss_KiB
printf '%s\n' "${TABLE[@]}"
if ((FAILED)); then
    printf 'RESULT: some targets NOT MET or outputs DIFFER\n'
    ((STRICT)) && exit 1
else
    printf 'RESULT: all targets met\n'
fi
exit 0
