#!/usr/bin/env bash
# demo.sh - build qchain and walk through the operator's workflow on images
# it creates in a scratch directory (kept with --keep):
#
#   base.raw <- snap1.qcow2 <- snap2.qcow2
#
# A VM disk (base.raw) gets two external snapshots while "the guest" writes
# (qemu-io stands in for the guest); then qchain inspects the chain: what
# each layer holds, which layer serves each byte, and the guest's view
# exported and checked against qemu-img.  The commit steps join this demo as
# qchain-delta and qchain-commit land.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/deps.sh"
qchain_need_packages "${QCHAIN_BUILD_PACKAGES[@]}"

keep=0
[ "${1:-}" = "--keep" ] && keep=1
build=${QCHAIN_BUILD_ROOT:-$top/_build}/demo
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DQCHAIN_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
bin=$build/tools
work=$(mktemp -d /tmp/qchain-demo.XXXXXX)
[ $keep -eq 1 ] || trap 'rm -rf "$work"' EXIT
cd "$work"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
guest_write() { qemu-io -f "$1" "$2" -c "$3" >/dev/null; }

echo "== a 256 MiB VM disk, half written by its guest"
qemu-img create -q -f raw base.raw 256M
guest_write raw base.raw 'write -P 0x11 0 128M'

echo "== external snapshot 1 (the backup of base.raw can now start)"
qemu-img create -q -f qcow2 -b base.raw -F raw snap1.qcow2
guest_write qcow2 snap1.qcow2 'write -P 0x22 32M 16M'
guest_write qcow2 snap1.qcow2 'write -z 64M 8M'

echo "== external snapshot 2 (the live commit of snap1 can now run)"
qemu-img create -q -f qcow2 -b snap1.qcow2 -F qcow2 snap2.qcow2
guest_write qcow2 snap2.qcow2 'write -P 0x33 40M 4M'
guest_write qcow2 snap2.qcow2 'write -P 0x44 200M 1M'

say "$bin/qchain-info" --backing-chain snap2.qcow2
say "$bin/qchain-map" snap2.qcow2
say "$bin/qchain-map" --output=json --max-length=96M snap2.qcow2
say "$bin/qchain-export" snap2.qcow2 guest-view.raw

echo
echo "== checking against qemu-img"
qemu-img convert -O raw snap2.qcow2 qemu-view.raw
cmp guest-view.raw qemu-view.raw && echo "export: identical to qemu-img convert"
diff <("$bin/qchain-map" --output=json snap2.qcow2) \
     <(qemu-img map --output=json snap2.qcow2) && echo "map: identical to qemu-img map"
echo "exported $(du -k --apparent-size guest-view.raw | cut -f1) KiB" \
     "apparent, $(du -k guest-view.raw | cut -f1) KiB allocated (sparse)"
[ $keep -eq 1 ] && echo "images kept in $work"
echo "demo complete"
