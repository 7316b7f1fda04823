#!/usr/bin/env bash
# A full file system under the base (issue 16), on a small tmpfs mounted
# for the test (needs root; where mounting is impossible, exit 77 with the
# reason):
#   - a commit whose growth exceeds the free space is refused before
#     writing, naming the base, the sizes and the mount point;
#   - space that runs out during the copy (another writer filled the file
#     system after the check; injected with strace): the error names the
#     base, says the job resumes, the guest view is intact, and the same
#     command then finishes the job.
. "$(dirname "$0")/../write/lib.sh"
C=$QCHAIN_BIN/qchain-commit
if [ "$(id -u)" -ne 0 ]; then echo "skip: needs root to mount a tmpfs"; exit 77; fi
mkdir -p fs
if ! mount -t tmpfs -o size=48m tmpfs fs 2>err; then
    echo "skip: cannot mount a tmpfs here: $(cat err)"; exit 77; fi
trap 'umount -l "$PWD/fs" 2>/dev/null' EXIT
mp=$(cd fs && pwd)

# refused before writing
qemu-img create -q -f raw fs/base.img 64M
qemu-img create -q -f qcow2 -b "$mp/base.img" -F raw big.qcow2
qemu-io -c 'write -P 5 0 60M' big.qcow2 >/dev/null
blocks=$(stat -c %b fs/base.img)
"$C" big.qcow2 >out 2>err; rc=$?
[ $rc -eq 1 ] \
    && grep -q "^qchain-commit: '$mp/base.img': the commit grows it by 60 MiB ([0-9]* bytes), more than the .* free on $mp; free space, then run the same command again$" err \
    && [ "$(stat -c %b fs/base.img)" = "$blocks" ] && [ ! -e fs/base.img.qchain-commit ] \
    && ok "growth over the free space: refused before writing, base and mount point named" \
    || bad "refusal" "rc=$rc $(cat err)"
rm -f big.qcow2 # a sibling of the next top

# two disks whose bases share the file system: each fits alone, not both
qemu-img create -q -f raw fs/d1.img 32M
qemu-img create -q -f raw fs/d2.img 32M
qemu-img create -q -f qcow2 -b "$mp/d1.img" -F raw d1.qcow2
qemu-img create -q -f qcow2 -b "$mp/d2.img" -F raw d2.qcow2
qemu-io -c 'write -P 1 0 28M' d1.qcow2 >/dev/null
qemu-io -c 'write -P 2 0 28M' d2.qcow2 >/dev/null
"$C" d1.qcow2 d2.qcow2 >out 2>err; rc=$?
[ $rc -eq 1 ] && grep -q "'$mp/d1.img': the commits of these disks grow the bases on its file system by 56 MiB" err \
    && [ ! -e fs/d1.img.qchain-commit ] && [ ! -e fs/d2.img.qchain-commit ] \
    && [ "$(stat -c %b fs/d1.img)" = "$(stat -c %b fs/d2.img)" ] \
    && ok "two disks that fit alone but not together: refused before writing" \
    || bad "fit together" "rc=$rc $(cat err)"
"$C" d1.qcow2 >/dev/null 2>err && ok "one of them alone fits and commits" || bad "one disk" "$(cat err)"
rm -f fs/d1.img fs/d2.img d1.qcow2 d2.qcow2 fs/*.qchain-commit*

# out of space during the copy: the file system fills after the check
# (another writer); made certain with strace's fault injection: from the
# 4th write into the base on, ENOSPC
qemu-img create -q -f qcow2 -b "$mp/base.img" -F raw top.qcow2
qemu-io -c 'write -P 6 0 30M' top.qcow2 >/dev/null
qemu-img convert -O raw top.qcow2 before.raw
if ! command -v strace >/dev/null; then echo "skip: no strace"; exit 77; fi
# LeakSanitizer cannot run under ptrace (an ASan build aborts)
ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" strace -f -qq -o /dev/null -P "$mp/base.img" -e trace=pwrite64,pwritev,pwritev2,write,fallocate,copy_file_range \
    -e inject=pwrite64,pwritev,pwritev2,write,copy_file_range:error=ENOSPC:when=4+ \
    "$C" top.qcow2 >out 2>err; rc=$?
[ $rc -eq 1 ] \
    && grep -q "^qchain-commit: '$mp/base.img': .*No space left on device.*; the commit stopped at a safe point: free space, then run the same command again to resume$" err \
    && [ -e fs/base.img.qchain-commit ] \
    && qemu-img compare -q -f raw -F qcow2 before.raw top.qcow2 \
    && ok "space ran out during the copy: the base named, the job resumes, the view intact" \
    || bad "ENOSPC mid-copy" "rc=$rc $(cat err)"
"$C" top.qcow2 >out 2>err && grep -q "Resuming" out \
    && qemu-img compare -q -f raw -F raw before.raw fs/base.img \
    && [ ! -e fs/base.img.qchain-commit ] \
    && ok "the same command then finished the job" \
    || bad "resume after ENOSPC" "$(cat err)"
finish
