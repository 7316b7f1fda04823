#!/bin/bash
# bounds.sh - resource bounds of the metadata-only commands (issue 7).
#
# For every hostile image made by tests/images/make-bound-images.py (at
# run time, one case at a time, into the temporary directory) and every
# committed image in tests/images/bad/, each of
#   qchain-info, qchain-info --backing-chain, qchain-map --output=json,
#   qchain-map --all-layers --output=json, qchain-check --output=json,
#   qchain-delta --output=json
# runs under GNU time, timeout and ulimit -v, and must:
#   - exit 0, 1, 2 or 3 (qchain-check's verdicts; the others use 0/1),
#     never die of a signal, never hit the timeout, no sanitizer report;
#   - peak RSS <= BOUND_RSS_KIB (1 GiB);
#   - user+sys CPU <= BOUND_CPU_PER_MIB (2 s) x max(1, input MiB), where
#     input is the apparent size of the files the command may read (the
#     image alone for plain qchain-info, the whole case directory else);
#   - finish within the CPU budget plus BOUND_TIMEOUT (60 s) of wall
#     time (timeout -k 5), so a hang fails instead of blocking CI;
#   - (a version 3 top with its dirty bit set, opened read-write by
#     tests/write/randwrite with RANDWRITE set: the refcount rebuild's walk
#     under the same bounds)
#   - survive an address-space limit of BOUND_AS_KIB (1.5 GiB), so the
#     memory bound holds even where RSS would not show it (allocations
#     that are never touched).
# Images some commands must refuse say so in the manifest (qchain-map's
# exit status).  Every run prints one line with its figures, so the log is
# a record:  # CASE CMD: rc R, rss K KiB, cpu C s (budget B s), out O bytes
#
# Sanitizer builds (ASan needs terabytes of address space and runs several
# times slower) skip the ulimit, RSS and CPU assertions and still check
# every run for crashes, hangs and sanitizer reports; the bounds are
# asserted by the release build's run.
#
# Environment: BOUND_CASES="name ..." runs only those generated cases;
# BOUND_BAD=0 skips tests/images/bad/; the BOUND_* limits above.
. "$(dirname "$0")/lib.sh"
need_python

BOUND_RSS_KIB=${BOUND_RSS_KIB:-1048576}
BOUND_AS_KIB=${BOUND_AS_KIB:-1572864}
BOUND_CPU_PER_MIB=${BOUND_CPU_PER_MIB:-2}
BOUND_TIMEOUT=${BOUND_TIMEOUT:-60}
GEN=$QCHAIN_IMAGES/make-bound-images.py
GNU_TIME=/usr/bin/time

if ! "$GNU_TIME" -f '%M' -o /dev/null true 2>/dev/null; then
    echo "# GNU time (/usr/bin/time) not found: skipping $SCRIPT_NAME"
    exit 77
fi

SANITIZED=0
if ldd "$QCHAIN_BIN/qchain-info" 2>/dev/null | grep -qE 'libasan|libtsan|libubsan' ||
   nm "$QCHAIN_BIN/qchain-info" 2>/dev/null | grep -q '__asan_init'; then
    SANITIZED=1
    diag "sanitizer build: checking for crashes, hangs and sanitizer reports only"
    diag "(no ulimit -v, RSS or CPU bounds; the release build asserts those)"
fi

# The commands, as "label|args" (the image is appended).
COMMANDS="info|info
info-chain|info --backing-chain
map|map --output=json
map-all|map --all-layers --output=json
check|check --output=json
delta|delta --output=json"

# apparent size in bytes of the regular files under DIR (symlinks and
# FIFOs are not counted twice or at all)
dir_bytes() {
    find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'
}

# measure NAME LABEL INPUT_BYTES WANT_RC TOOL ARGS...: one run under the
# bounds; WANT_RC "any" accepts 0..3, a number requires it.
measure() {
    local name=$1 label=$2 input=$3 want=$4 tool=$5 rc rss cpu budget out limit
    shift 5
    local tf=$TESTTMP/.time err=$TESTTMP/.stderr outc=$TESTTMP/.outbytes
    rm -f "$tf" "$outc"
    budget=$(awk -v b="$input" -v k="$BOUND_CPU_PER_MIB" \
        'BEGIN { m = b / 1048576; if (m < 1) m = 1; printf "%.2f", k * m }')
    # the hard timeout catches hangs: the CPU budget plus BOUND_TIMEOUT
    # (sanitizer builds run several times slower: five budgets)
    limit=$(awk -v b="$budget" -v t="$BOUND_TIMEOUT" -v s="$SANITIZED" \
        'BEGIN { printf "%d", b * (s == 1 ? 5 : 1) + t }')
    (
        [ "$SANITIZED" = 1 ] || ulimit -v "$BOUND_AS_KIB"
        case $tool in /*) ;; *) tool=$QCHAIN_BIN/qchain-$tool ;; esac
        exec "$GNU_TIME" -f '%M %U %S' -o "$tf" \
            timeout -k 5 "$limit" "$tool" "$@"
    ) < /dev/null 2> "$err" | wc -c > "$outc"
    rc=${PIPESTATUS[0]}
    out=$(cat "$outc" 2>/dev/null || echo '?')
    case $tool in /*) QC_CMD="$(basename "$tool") $*" ;; *) QC_CMD="qchain-$tool $*" ;; esac
    QC_ERR=$err
    if [ ! -s "$tf" ] || ! read -r rss usr sys < <(tail -n 1 "$tf"); then
        diag "$name $label: no measurement (rc $rc): $QC_CMD"
        diag_file "$err" 10
        return 1
    fi
    case $rss in *[!0-9]*) diag "$name $label: bad measurement: $(tail -n 3 "$tf")"; return 1 ;; esac
    cpu=$(awk -v u="$usr" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
    diag "$name $label: rc $rc, rss $rss KiB, cpu $cpu s (budget $budget s)," \
         "input $input bytes, out $out bytes"
    local ok=0
    # GNU time reports a killed command as "Command terminated by signal"
    # (exit 128+N); timeout exits 124 (137 after -k)
    if grep -q '^Command terminated by signal' "$tf" || [ "$rc" -ge 124 ]; then
        diag "  died or timed out (exit $rc): $QC_CMD"
        diag_file "$err" 10
        ok=1
    elif [ "$want" = any ]; then
        if [ "$rc" -gt 3 ]; then
            diag "  exit $rc is not 0..3: $QC_CMD"; diag_file "$err" 10; ok=1
        fi
    elif [ "$rc" -ne "$want" ]; then
        diag "  exit $rc, expected $want: $QC_CMD"; diag_file "$err" 10; ok=1
    fi
    expect_clean || ok=1
    # under ulimit -v a refusal for want of memory is a broken bound too
    # (exit 1 is otherwise a fine answer to a hostile image)
    if grep -qiE 'cannot allocate memory|out of memory' "$err"; then
        diag "  ran out of memory: $QC_CMD"; diag_file "$err" 5; ok=1
    fi
    if [ "$SANITIZED" = 0 ]; then
        if [ "$rss" -gt "$BOUND_RSS_KIB" ]; then
            diag "  peak RSS $rss KiB exceeds $BOUND_RSS_KIB KiB"; ok=1
        fi
        if awk -v c="$cpu" -v b="$budget" 'BEGIN { exit !(c > b) }'; then
            diag "  CPU $cpu s exceeds the budget $budget s"; ok=1
        fi
    fi
    return $ok
}

# Cases whose damage lies in the backing chain alone (too deep, a loop, a
# FIFO): map --all-layers lists the layers that open, warns where the
# chain stops and exits 0 (each layer's view needs only that layer)
CHAIN_ONLY=" chain-300 loop-ab loop-self loop-symlink loop-long-names backing-fifo "

# run_all NAME DIR TOP WANT_MAP: the six commands on DIR/TOP
run_all() {
    local name=$1 dir=$2 top=$3 want_map=$4 label args input want tool
    local all top_bytes rc=0
    all=$(dir_bytes "$dir")
    top_bytes=$(stat -L -c %s "$dir/$top")
    cd "$dir" || return 1
    while IFS='|' read -r label args; do
        input=$all
        want=any
        case $label in
        info) input=$top_bytes ;;
        map) want=$want_map ;;
        map-all)
            want=$want_map
            case $CHAIN_ONLY in *" $name "*) want=0 ;; esac ;;
        esac
        # shellcheck disable=SC2086
        set -- $args
        tool=$1
        shift
        measure "$name" "$label" "$input" "$want" "$tool" "$@" "$top" || rc=1
    done <<< "$COMMANDS"
    return $rc
}

# dirty_open NAME DIR TOP: a version 3 TOP with its dirty bit set, opened
# read-write (by tests/write/randwrite, writing nothing): the refcounts are
# rebuilt at open with the check's walk, so the same bounds hold (a walk
# over the budget ends with a clear error, exit 1)
dirty_open() {
    local name=$1 dir=$2 top=$3
    [ -n "${RANDWRITE:-}" ] || return 0
    $PY - "$dir/$top" "$dir/dirty-$top" <<'PY' || return 0
import shutil, struct, sys
h = open(sys.argv[1], 'rb').read(104)
if len(h) < 104 or h[:4] != b'QFI\xfb' or struct.unpack('>I', h[4:8])[0] != 3:
    sys.exit(1)
shutil.copyfile(sys.argv[1], sys.argv[2])
with open(sys.argv[2], 'r+b') as f:
    f.seek(72)
    v = struct.unpack('>Q', f.read(8))[0]
    f.seek(72)
    f.write(struct.pack('>Q', v | 1))
PY
    measure "$name" rdwr-dirty "$(dir_bytes "$dir")" any "$RANDWRITE" \
        "$dir/dirty-$top" /dev/null 1 0
    local rc=$?
    rm -f "$dir/dirty-$top"
    return $rc
}

# one generated case: make it, run the commands, delete it (the largest
# is a 64 MiB file; only one exists at a time)
case_generated() {
    local name=$1 d=$TESTTMP/gen line top want_map
    rm -rf "$d"
    mkdir -p "$d"
    if ! $PY "$GEN" "$d" "$name" > "$d/.gen.log" 2>&1; then
        diag "make-bound-images.py $name failed:"; diag_file "$d/.gen.log"
        return 1
    fi
    line=$(grep "^$name " "$d/cases")
    read -r _ top want_map _ <<< "$line"
    diag "${line#* * * }"
    run_all "$name" "$d/$name" "$top" "$want_map"
    local rc=$?
    dirty_open "$name" "$d/$name" "$top" || rc=1
    rm -rf "$d"
    return $rc
}

CASES=${BOUND_CASES:-$($PY "$GEN" --list)}
for n in $CASES; do
    tcase "bounds: $n" case_generated "$n"
done

# the committed bad images, each under the same measurement (the loop
# images name their siblings: the whole directory counts as input)
case_bad() {
    local f=$1 d
    d=$TESTTMP/bad
    run_all "bad/$(basename "$f")" "$d" "$(basename "$f")" any
}
if [ "${BOUND_BAD:-1}" = 1 ]; then
    cp -r "$QCHAIN_IMAGES/bad" "$TESTTMP/bad"
    for f in "$TESTTMP"/bad/*.qcow2; do
        tcase "bounds: bad/$(basename "$f")" case_bad "$f"
    done
fi

finish
