#!/usr/bin/env bash
# test.sh - the whole test suite, as CI runs it on a fresh Debian 12:
#   1. a warnings-as-errors build and every ctest (unit, cli against
#      qemu-img, fuzz corpus replay);
#   2. the same suite again under AddressSanitizer + UBSan;
#   3. the Debian packages (scripts/package.sh: cpack, lintian, unpacked
#      and used: commands, manual pages, completion, the library through
#      pkg-config and find_package);
#   4. with clang, each libFuzzer harness for a bounded time
#      (QCHAIN_FUZZ_SECONDS, default 60; 0 skips).
# Build trees go to $QCHAIN_BUILD_ROOT (default ./_build).
set -euo pipefail
shopt -s nullglob
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/deps.sh"
qchain_need_packages "${QCHAIN_BUILD_PACKAGES[@]}" "${QCHAIN_TEST_PACKAGES[@]}"

root=${QCHAIN_BUILD_ROOT:-$top/_build}
jobs=$(nproc 2>/dev/null || echo 2)
fuzz_seconds=${QCHAIN_FUZZ_SECONDS:-60}
mkdir -p "$root"

step() { printf '\n=== %s ===\n' "$*"; }

step "build (warnings are errors)"
cmake -S "$top" -B "$root/release" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DQCHAIN_WERROR=ON >/dev/null
cmake --build "$root/release" -j"$jobs"
step "test suite"
ctest --test-dir "$root/release" -j"$jobs" --output-on-failure

step "build with AddressSanitizer + UBSan"
# -O1, as the sanitizers' authors advise: at -O0 the suite's CPU-bound
# cases ran 2.7x slower (qchain-check on bounds.sh's l1-max-same-l2:
# 149 s against 56 s), with the same checks
cmake -S "$top" -B "$root/asan" -DCMAKE_BUILD_TYPE=Debug \
      -DCMAKE_C_FLAGS_DEBUG="-g -O1" \
      -DQCHAIN_WERROR=ON -DQCHAIN_SANITIZE=ON >/dev/null
cmake --build "$root/asan" -j"$jobs"
step "test suite under ASan + UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$root/asan" -j"$jobs" --output-on-failure

step "Debian packages: build, lintian, install into a scratch root, use"
QCHAIN_BUILD_ROOT=$root "$top/scripts/package.sh"

if command -v clang >/dev/null && [ "$fuzz_seconds" -gt 0 ]; then
    step "fuzz harnesses, ${fuzz_seconds}s each"
    CC=clang cmake -S "$top" -B "$root/fuzz" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
          -DQCHAIN_FUZZ=ON -DQCHAIN_BUILD_TESTS=OFF >/dev/null
    cmake --build "$root/fuzz" -j"$jobs"
    for src in "$top"/fuzz/fuzz_*.c; do
        t=$(basename "$src" .c)
        bin="$root/fuzz/fuzz/$t"
        [ -x "$bin" ] || { echo "missing fuzzer $bin" >&2; exit 1; }
        work="$root/fuzz/run-$t"
        rm -rf "$work"; mkdir -p "$work/corpus"
        cp -r "$top/fuzz/corpus/$t/." "$work/corpus/" 2>/dev/null || true
        dict=()
        [ -f "$top/fuzz/qcow2.dict" ] && dict=(-dict="$top/fuzz/qcow2.dict")
        echo "--- $t"
        (cd "$work" && "$bin" "${dict[@]}" -max_total_time="$fuzz_seconds" \
             -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 corpus \
             2>&1 | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec|==[0-9]+==ERROR|SUMMARY)' || true)
        found=("$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*)
        if [ ${#found[@]} -gt 0 ]; then
            echo "fuzzer $t found a failure: ${found[*]}" >&2
            exit 1
        fi
    done
fi
step "all tests passed"
