# holder.sh - a qemu-io that stops itself while it holds an image open, so
# that its QEMU locks stay taken while a test probes them (sourced by
# tests/cli/lib.sh and tests/write/lib.sh).
#
#   hold [-r|-n] IMAGE [QEMU-IO OPTION...]   then   release
#
# hold starts qemu-io on IMAGE read-write (a 512-byte write at 0 first), or
# read-only with -r, or read-write but only reading with -n, and returns
# once it has stopped (SIGSTOP, sent by itself) with its locks taken;
# HOLDER is its pid.  It returns 1 when qemu-io ends or does not stop
# within 10 s (its output is in $HOLDER_LOG when that is set).  release
# lets it go on and end.  With HOLD_TRAP=1 (the CLI tests, whose cases
# run in subshells) hold also sets an EXIT trap that releases it.
HOLDER=""

release() {
    if [ -n "$HOLDER" ]; then
        kill -CONT "$HOLDER" 2>/dev/null
        wait "$HOLDER" 2>/dev/null
        HOLDER=""
    fi
}

hold() {
    local mode=rw img cmd i st
    case $1 in -r) mode=ro; shift ;; -n) mode=read; shift ;; esac
    img=$1
    shift
    case $mode in
    ro) set -- -r "$@"; cmd='read 0 512' ;;
    read) cmd='read 0 512' ;;
    *) cmd='write -P 0x33 0 512' ;;
    esac
    "${QEMU_IO:-qemu-io}" "$@" -c "sigraise $(kill -l STOP)" -c "$cmd" \
        "$img" > "${HOLDER_LOG:-/dev/null}" 2>&1 &
    HOLDER=$!
    [ "${HOLD_TRAP:-0}" = 1 ] && trap release EXIT
    for i in $(seq 1 200); do
        st=$(ps -o stat= -p "$HOLDER" 2>/dev/null)
        case $st in
        T*) return 0 ;;
        "") HOLDER=""; return 1 ;;
        esac
        sleep 0.05
    done
    return 1
}
