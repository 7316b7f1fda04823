#!/usr/bin/env bash
# fuzz-campaign.sh - the long local fuzzing campaign (issue 7): every
# libFuzzer harness in turn, SECONDS each (default 600) with JOBS parallel
# jobs (default 2), from a copy of its seed corpus; prints executions per
# second and libFuzzer's final coverage ("cov:") per harness, and fails if
# any run left a crash, leak, timeout or out-of-memory artifact.
#
#   scripts/fuzz-campaign.sh [SECONDS [JOBS [HARNESS...]]]
#
# Needs a fuzz build: CC=clang cmake -S . -B _build/fuzz -DQCHAIN_FUZZ=ON
# -DQCHAIN_BUILD_TESTS=OFF && cmake --build _build/fuzz (done here if
# missing).  Work directories go to $QCHAIN_BUILD_ROOT/campaign (default
# ./_build/campaign) and are kept for inspection.
set -euo pipefail
shopt -s nullglob
top=$(cd "$(dirname "$0")/.." && pwd)
root=${QCHAIN_BUILD_ROOT:-$top/_build}
secs=${1:-600}
jobs=${2:-2}
shift $(( $# > 2 ? 2 : $# ))
harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then
    for src in "$top"/fuzz/fuzz_*.c; do harnesses+=("$(basename "$src" .c)"); done
fi
if [ ! -x "$root/fuzz/fuzz/${harnesses[0]}" ]; then
    CC=clang cmake -S "$top" -B "$root/fuzz" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DQCHAIN_FUZZ=ON -DQCHAIN_BUILD_TESTS=OFF >/dev/null
    cmake --build "$root/fuzz" -j"$jobs" >/dev/null
fi
status=0
printf '%-16s %8s %6s %12s %10s %8s %8s\n' harness seconds jobs executions exec/s cov ft
for t in "${harnesses[@]}"; do
    bin=$root/fuzz/fuzz/$t
    work=$root/campaign/$t
    rm -rf "$work"; mkdir -p "$work/corpus"
    cp -r "$top/fuzz/corpus/$t/." "$work/corpus/" 2>/dev/null || true
    (cd "$work" && "$bin" -dict="$top/fuzz/qcow2.dict" -max_total_time="$secs" \
         -timeout=10 -rss_limit_mb=2048 -jobs="$jobs" -workers="$jobs" \
         -print_final_stats=1 corpus >/dev/null 2>&1 || true)
    # per job: the last status line (cov, ft, exec/s) and the executions
    execs=0; rate=0; cov=0; ft=0
    for log in "$work"/fuzz-*.log; do
        line=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -1 || true)
        n=$(grep -oE '^stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
        c=$(grep -oE 'cov: [0-9]+' <<<"$line" | grep -oE '[0-9]+' || echo 0)
        f=$(grep -oE 'ft: [0-9]+' <<<"$line" | grep -oE '[0-9]+' || echo 0)
        r=$(grep -oE 'exec/s: [0-9]+' <<<"$line" | grep -oE '[0-9]+' || echo 0)
        execs=$((execs + n)); rate=$((rate + r))
        [ "$c" -gt "$cov" ] && cov=$c
        [ "$f" -gt "$ft" ] && ft=$f
    done
    printf '%-16s %8s %6s %12s %10s %8s %8s\n' "$t" "$secs" "$jobs" "$execs" "$rate" "$cov" "$ft"
    found=("$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*)
    if [ ${#found[@]} -gt 0 ]; then
        echo "  $t found: ${found[*]}" >&2
        status=1
    fi
done
exit $status
