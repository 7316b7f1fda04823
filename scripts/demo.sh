#!/usr/bin/env bash
# demo.sh - build qchain and walk through the operator's workflow on images
# it creates in a scratch directory (kept with --keep):
#
#   base.raw <- snap1.qcow2 <- snap2.qcow2
#
# A VM disk (base.raw) gets two external snapshots (qchain-snapshot) while
# "the guest" writes (qemu-io stands in for it); qchain inspects the chain
# (what each layer holds, which layer serves each byte), asks qchain-delta
# what each commit costs (the time measured on this host), commits snap1
# into the base while snap2 stays live, then commits snap2 (the offline
# step), and checks the result against qemu-img.
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
say "$bin/qchain-create" -f raw base.raw 256M
guest_write raw base.raw 'write -P 0x11 0 128M'

echo
echo "== external snapshot 1: the backup of base.raw can start"
say "$bin/qchain-snapshot" base.raw snap1.qcow2
guest_write qcow2 snap1.qcow2 'write -P 0x22 32M 16M'
guest_write qcow2 snap1.qcow2 'write -z 64M 8M'

echo
echo "== external snapshot 2: the live commit of snap1 can run"
say "$bin/qchain-snapshot" snap1.qcow2 snap2.qcow2
guest_write qcow2 snap2.qcow2 'write -P 0x33 40M 4M'
guest_write qcow2 snap2.qcow2 'write -P 0x44 200M 1M'

say "$bin/qchain-info" --backing-chain snap2.qcow2
say "$bin/qchain-map" snap2.qcow2
say "$bin/qchain-map" --output=json --max-length=96M snap2.qcow2
qemu-img convert -O raw snap2.qcow2 view-before.raw

echo
echo "== what the live commit of snap1 copies, and how long it takes"
say "$bin/qchain-delta" --top snap1.qcow2 --base base.raw snap2.qcow2
echo
echo "== commit snap1 into the base; snap2 is re-pointed at it"
say "$bin/qchain-commit" --top snap1.qcow2 --base base.raw snap2.qcow2
echo
echo "== before booking the downtime: the offline commit of snap2, and"
echo "   whether another live round would shrink it (the guest writing 2 MiB/s)"
say "$bin/qchain-delta" --growth-rate 2M --downtime 0.5 snap2.qcow2
echo
echo "== the guest stopped: commit the last overlay (the downtime)"
say "$bin/qchain-commit" snap2.qcow2
say "$bin/qchain-export" base.raw guest-view.raw

echo
echo "== checking against qemu-img"
cmp view-before.raw base.raw && echo "commit: base.raw holds exactly the guest's view"
cmp guest-view.raw base.raw && echo "export: identical"
diff <("$bin/qchain-map" --output=json base.raw) \
     <(qemu-img map --output=json base.raw) && echo "map: identical to qemu-img map"
[ $keep -eq 1 ] && echo "images kept in $work"
echo "demo complete"
