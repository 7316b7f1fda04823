#!/usr/bin/env bash
# package.sh - build the Debian packages and check them as a user would
# meet them (issue 19; scripts/test.sh runs it, CI with it):
#   1. a build configured for /usr (multiarch library directory, no RPATH,
#      tests off), `cpack -G DEB`: qchain, libqcow2-0, libqcow2-dev;
#   2. lintian: no errors;
#   3. apt can install them together on this system (apt-get -s);
#   4. unpacked into a scratch root (dpkg -x): `qchain-info --version`
#      runs from it, every command has a manual page that `man -l`
#      renders with the sections NAME, SYNOPSIS, DESCRIPTION, OPTIONS,
#      EXIT STATUS, JSON OUTPUT, EXAMPLES, SEE ALSO (qcow2(3) too), and a
#      bash completion;
#   5. a program compiled through pkg-config against the unpacked
#      libqcow2-dev, and against a `cmake --install --prefix` of a normal
#      build into a non-default prefix (also through find_package), runs.
# Prints the packages' contents.  Work goes to $QCHAIN_BUILD_ROOT/package.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/deps.sh"
qchain_need_packages "${QCHAIN_BUILD_PACKAGES[@]}" "${QCHAIN_PACKAGE_PACKAGES[@]}"

root=${QCHAIN_BUILD_ROOT:-$top/_build}/package
jobs=$(nproc 2>/dev/null || echo 2)
rm -rf "$root"
mkdir -p "$root"
fail() { echo "package.sh: $*" >&2; exit 1; }
step() { printf -- '--- %s\n' "$*"; }

step "packages (cpack -G DEB)"
cmake -S "$top" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_INSTALL_PREFIX=/usr -DQCHAIN_BUILD_TESTS=OFF \
      -DQCHAIN_WERROR=ON >/dev/null
cmake --build "$root/build" -j"$jobs" >/dev/null
(cd "$root/build" && cpack -G DEB >cpack.log 2>&1) ||
    { cat "$root/build/cpack.log"; fail "cpack failed"; }
debs=("$root"/build/*.deb)
[ ${#debs[@]} -eq 3 ] || fail "expected 3 packages, got: ${debs[*]}"
for d in "${debs[@]}"; do
    echo "$(basename "$d"):"
    dpkg-deb -f "$d" Package Version Depends | sed 's/^/    /'
    dpkg-deb -c "$d" | awk '$6 !~ /\/$/ {print "    " $6, $7, $8}'
done

step "lintian"
lintian --fail-on error --tag-display-limit 0 "${debs[@]}" 2>&1 |
    grep -v 'running with root privileges' || true
lintian --fail-on error "${debs[@]}" >/dev/null 2>&1 ||
    fail "lintian reports errors"

step "apt can install them (simulated)"
apt-get install -s "${debs[@]}" >"$root/apt.log" 2>&1 ||
    { cat "$root/apt.log"; fail "apt-get install -s fails"; }
grep -E '^Inst (qchain|libqcow2)' "$root/apt.log" | sed 's/^/    /'

step "unpacked into a scratch root"
sr=$root/root
for d in "${debs[@]}"; do dpkg -x "$d" "$sr"; done
libdir=$(dirname "$(find "$sr" -name 'libqcow2.so.0' | head -n 1)")
[ -n "$libdir" ] && [ "$libdir" != . ] || fail "no libqcow2.so.0 in the packages"
export LD_LIBRARY_PATH=$libdir
"$sr/usr/bin/qchain-info" --version || fail "qchain-info --version fails"
for b in "$sr"/usr/bin/*; do
    readelf -d "$b" | grep -qE 'RPATH|RUNPATH' && fail "$b carries an RPATH"
done

pages=0
check_page() { # PAGE: renders, has every section
    local page=$1 out s
    out=$(MANWIDTH=80 man -l "$page" 2>"$root/man.err") ||
        fail "man -l $page fails: $(cat "$root/man.err")"
    [ -s "$root/man.err" ] && fail "man -l $page warns: $(cat "$root/man.err")"
    for s in NAME SYNOPSIS DESCRIPTION; do
        grep -q "^$s" <<< "$out" || fail "$page has no $s section"
    done
    pages=$((pages + 1))
}
for b in "$sr"/usr/bin/*; do
    n=$(basename "$b")
    p=("$sr"/usr/share/man/man1/"$n".1*)
    [ -e "${p[0]}" ] || fail "no manual page for $n"
    check_page "${p[0]}"
    out=$(MANWIDTH=80 man -l "${p[0]}" 2>/dev/null)
    for s in OPTIONS "EXIT STATUS" "JSON OUTPUT" EXAMPLES "SEE ALSO"; do
        grep -q "^$s" <<< "$out" || fail "$n(1) has no $s section"
    done
    [ -e "$sr/usr/share/bash-completion/completions/$n" ] ||
        fail "no bash completion for $n"
done
p=("$sr"/usr/share/man/man3/qcow2.3*)
[ -e "${p[0]}" ] || fail "no qcow2(3) manual page"
check_page "${p[0]}"
echo "    $pages manual pages render with their sections"

# a program over the library: create an image, open it, print its size
cat >"$root/prog.c" <<'EOF'
#include <stdio.h>
#include <qcow2/qcow2.h>
int main(int argc, char **argv)
{
    struct qcow2_create_opts o = {.size = sizeof(o), .virtual_size = 1 << 20};
    struct qcow2_image *img = qcow2_new();
    char err[256];
    if (argc != 2 || qcow2_create(argv[1], &o, err, sizeof(err)) < 0 ||
        qcow2_open(img, argv[1], NULL) < 0)
        return 1;
    printf("%s %llu\n", qcow2_version_string(),
           (unsigned long long)qcow2_virtual_size(img));
    return qcow2_close(img) < 0;
}
EOF
run_prog() { # LABEL: $root/prog must print the version and 1048576
    local out
    rm -f "$root/p.qcow2"
    out=$("$root/prog" "$root/p.qcow2") || fail "$1: the program fails"
    [ "${out#* }" = 1048576 ] || fail "$1: the program printed '$out'"
    echo "    $1: $out"
}

step "a program through pkg-config, against the unpacked libqcow2-dev"
pcdir=$(dirname "$(find "$sr" -name qcow2.pc | head -n 1)")
flags=$(PKG_CONFIG_SYSROOT_DIR=$sr PKG_CONFIG_PATH=$pcdir \
        pkg-config --cflags --libs qcow2) || fail "pkg-config qcow2 fails"
echo "    pkg-config: $flags"
# shellcheck disable=SC2086
cc -o "$root/prog" "$root/prog.c" $flags || fail "the program does not build"
run_prog "packaged library"

step "a program through pkg-config, cmake --install --prefix elsewhere"
cmake -S "$top" -B "$root/plain" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DQCHAIN_BUILD_TESTS=OFF >/dev/null
cmake --build "$root/plain" -j"$jobs" >/dev/null
prefix=$root/some/where
cmake --install "$root/plain" --prefix "$prefix" >/dev/null
pc=$(find "$prefix" -name qcow2.pc | head -n 1)
[ -n "$pc" ] || fail "no qcow2.pc installed under $prefix"
unset LD_LIBRARY_PATH
flags=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --cflags --libs qcow2)
echo "    pkg-config: $flags"
case $flags in *"$prefix"*) ;; *) fail "qcow2.pc does not name $prefix" ;; esac
libdir=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --variable=libdir qcow2)
# shellcheck disable=SC2086
cc -o "$root/prog" "$root/prog.c" $flags -Wl,-rpath,"$libdir" ||
    fail "the program does not build against $prefix"
run_prog "installed under another prefix"
"$prefix/bin/qchain-info" --version >/dev/null ||
    fail "the installed commands do not find their library"

step "a program through find_package(qcow2), same prefix"
mkdir -p "$root/consumer"
cp "$root/prog.c" "$root/consumer/"
cat >"$root/consumer/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.16)
project(consumer C)
find_package(qcow2 REQUIRED)
add_executable(prog prog.c)
target_link_libraries(prog PRIVATE qcow2::qcow2)
EOF
cmake -S "$root/consumer" -B "$root/consumer/build" \
      -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_RPATH="$libdir" >/dev/null ||
    fail "find_package(qcow2) fails"
cmake --build "$root/consumer/build" >/dev/null
cp "$root/consumer/build/prog" "$root/prog"
run_prog "find_package"
step "packages good"
