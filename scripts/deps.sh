# deps.sh - sourced by the project scripts: make sure Debian packages are
# installed.  As root, missing packages are installed with apt-get; as
# another user the apt-get line is printed and the script stops.
qchain_need_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' \
            || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "qchain: missing Debian packages; install them with:" >&2
        echo "  sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "qchain: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Build dependencies, plus qemu-utils (the oracle of the tests and the demo).
QCHAIN_BUILD_PACKAGES=(build-essential cmake pkg-config zlib1g-dev
                       libzstd-dev uuid-dev libssl-dev qemu-utils python3
                       scdoc)
QCHAIN_TEST_PACKAGES=(clang libclang-rt-14-dev time xfsprogs strace e2fsprogs
                      man-db bsdextrautils)
# scripts/package.sh: the Debian packages (dpkg-shlibdeps, file for CPack)
# and their checks
QCHAIN_PACKAGE_PACKAGES=(dpkg-dev file lintian man-db)
