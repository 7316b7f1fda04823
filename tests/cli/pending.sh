#!/bin/bash
# pending.sh - the operator's safety net (issue 16).
#
# An unfinished commit is visible: qchain-commit is killed (SIGKILL) while
# its journal exists; qchain-info on the base and on the active image says
# so (human line, JSON key "pending-commit" last in the image's object, on
# the base's object with --backing-chain), qchain-check warns and keeps its
# exit codes; after the re-run finishes the job, all of it is gone.
#
# Lock refusals name who holds the lock: a stopped qemu-io holds an image
# (or its backing file); info and check name the file in use, qemu-io and
# its pid, and what to do.
. "$(dirname "$0")/lib.sh"
need_qemu
need_python

HOLDER_LOG=$TESTTMP/holder.log
trap 'release; cleanup' EXIT

# stop_when_exists PID FILE: SIGSTOP to PID as soon as FILE exists (polled
# every millisecond); fails when PID ends first or after 60 s
stop_when_exists() {
    $PY - "$1" "$2" <<'EOF'
import os, signal, sys, time
pid, path = int(sys.argv[1]), sys.argv[2]
end = time.time() + 60
while not os.path.exists(path):
    try:
        st = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0]
    except OSError:
        sys.exit(1)
    if st == "Z" or time.time() > end:
        sys.exit(1)
    time.sleep(0.001)
os.kill(pid, signal.SIGSTOP)
EOF
}

# A chain base.qcow2 <- top.qcow2 (256 MiB written in top, so that the
# copy takes a while) and a commit of it killed while its journal exists.
# Up to 5 tries: a commit faster than the poll finishes instead.
interrupted_commit() {
    local try pid
    for try in 1 2 3 4 5; do
        rm -f base.qcow2* top.qcow2
        qimg create -q -f qcow2 base.qcow2 256M &&
            qio -c 'write -P 1 0 1M' base.qcow2 &&
            qimg create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 &&
            qio -c 'write -P 2 0 256M' top.qcow2 || return 1
        "$QCHAIN_BIN/qchain-commit" top.qcow2 > /dev/null 2>&1 &
        pid=$!
        stop_when_exists $pid base.qcow2.qchain-commit
        kill -KILL $pid 2> /dev/null
        wait $pid 2> /dev/null
        [ -e base.qcow2.qchain-commit ] && return 0
        diag "try $try: the commit finished before it was killed"
    done
    return 1
}

# json_check FILE PYTHON-EXPR: the expression over the parsed JSON `d` is true
json_check() {
    if ! $PY -c '
import json, sys
from collections import OrderedDict
d = json.load(open(sys.argv[1]), object_pairs_hook=OrderedDict)
sys.exit(0 if eval(sys.argv[2]) else 1)
' "$1" "$2"; then
        diag "JSON check failed: $2"
        diag_file "$1" 20
        return 1
    fi
}

expect_stdout_match() {
    if ! grep -qE -- "$1" "$QC_OUT"; then
        diag "command: $QC_CMD"
        diag "stdout should match /$1/; stdout (tail):"
        tail -n 5 "$QC_OUT" | sed 's/^/#   /'
        return 1
    fi
}

expect_no_match() { # FILE REGEX
    if grep -qE -- "$2" "$1"; then
        diag "command: $QC_CMD"
        diag "$(basename "$1") should not match /$2/:"
        grep -E -- "$2" "$1" | head -n 3 | sed 's/^/#   /'
        return 1
    fi
}

case_pending() {
    cd "$(casedir pending)" && interrupted_commit || return 1
    local uuid want rc=0 qrc
    uuid=$(sed -n 's/^uuid //p' base.qcow2.qchain-commit)
    [ -n "$uuid" ] || { diag "no uuid in the journal"; return 1; }
    want="pending commit: job $uuid into 'base.qcow2' \(active 'top.qcow2', top 'top.qcow2'\): run the same qchain-commit command again to finish it; journal base.qcow2.qchain-commit"

    # human: on the base, on the active image (its chain), with -U
    for args in "base.qcow2" "top.qcow2" "-U top.qcow2" \
                "--backing-chain top.qcow2"; do
        qc info $args
        expect_rc 0 || rc=1
        expect_stdout_match "^$want\$" || rc=1
    done
    # with --backing-chain after the base's description, not the top's
    qc info --backing-chain top.qcow2
    awk '/^image: /{img=$2} /^pending commit:/{print img}' "$QC_OUT" > where
    expect_eq "image the line follows" base.qcow2 "$(cat where)" || rc=1

    # JSON: last key of the image's object
    local obj="{'journal': 'base.qcow2.qchain-commit', 'job': '$uuid', 'active': 'top.qcow2', 'top': 'top.qcow2', 'base': 'base.qcow2'}"
    qc info --output=json base.qcow2
    expect_rc 0 || rc=1
    cp "$QC_OUT" base.json
    json_check base.json "list(d)[-1] == 'pending-commit' and dict(d['pending-commit']) == $obj" || rc=1
    qc info --output=json top.qcow2
    cp "$QC_OUT" top.json
    json_check top.json "list(d)[-1] == 'pending-commit' and d['pending-commit']['job'] == '$uuid'" || rc=1
    qc info --output=json --backing-chain top.qcow2
    cp "$QC_OUT" chain.json
    json_check chain.json "'pending-commit' not in d[0] and list(d[1])[-1] == 'pending-commit' and dict(d[1]['pending-commit']) == $obj" || rc=1
    # every other key as without the journal, in the same order
    mv base.qcow2.qchain-commit journal.aside
    qc info --output=json base.qcow2
    cp "$QC_OUT" base-nojournal.json
    mv journal.aside base.qcow2.qchain-commit
    json_check base-nojournal.json "list(d) == [k for k in json.load(open('base.json'), object_pairs_hook=OrderedDict) if k != 'pending-commit']" || rc=1

    # check: a warning naming the job, qemu-img check's exit code
    for img in base.qcow2 top.qcow2; do
        "$QEMU_IMG" check "$img" > /dev/null 2>&1
        qrc=$?
        qc check "$img"
        expect_rc $qrc || rc=1
        expect_stderr_match "^qchain-check: warning: 'base.qcow2': ${want}\$" || rc=1
        qc check --output=json "$img"
        expect_rc $qrc || rc=1
        expect_stderr_match "warning: .*job $uuid" || rc=1
    done

    # delta: the same warning, its figures as before
    qc delta top.qcow2
    expect_rc 0 || rc=1
    expect_stderr_match "^qchain-delta: warning: 'base.qcow2': ${want}\$" || rc=1

    # the re-run finishes the job: nothing pending any more
    qc commit top.qcow2
    expect_rc 0 || return 1
    [ -e base.qcow2.qchain-commit ] && { diag "journal left after the re-run"; return 1; }
    qc info base.qcow2
    expect_no_match "$QC_OUT" "pending commit" || rc=1
    qc info --output=json --backing-chain top.qcow2
    cp "$QC_OUT" after.json
    json_check after.json "all('pending-commit' not in o for o in d)" || rc=1
    qc check base.qcow2
    expect_rc 0 || rc=1
    expect_no_match "$QC_ERR" "pending" || rc=1
    qc delta top.qcow2
    expect_no_match "$QC_ERR" "pending" || rc=1
    return $rc
}
tcase "interrupted commit: info (human, JSON, --backing-chain) and check report it; gone after the re-run" case_pending

# A file that is not a journal, and a journal's leftover temporary file,
# are no pending job.
case_not_journal() {
    cd "$(casedir not-journal)" || return 1
    qimg create -q -f qcow2 base.qcow2 1M || return 1
    echo "something else" > base.qcow2.qchain-commit
    printf 'qchain-commit journal 1\nuuid x\n' > base.qcow2.qchain-commit.tmp
    qc info base.qcow2
    expect_rc 0 || return 1
    expect_no_match "$QC_OUT" "pending" || return 1
    qc check base.qcow2
    expect_rc 0 || return 1
    expect_no_match "$QC_ERR" "pending"
}
tcase "not a journal: nothing pending" case_not_journal

mk_chain() {
    qimg create -q -f qcow2 base.qcow2 1M &&
        qio -c 'write -P 0x11 0 64k' base.qcow2 &&
        qimg create -q -f qcow2 -b base.qcow2 -F qcow2 img.qcow2 1M
}

# refused_by_holder TOOL IMAGE FILE ADVICE [ARGS...]: exit 1, the message
# names FILE as in use (FILE = IMAGE: "held by"), qemu-io and its pid, and
# ADVICE.
refused_by_holder() {
    local tool=$1 img=$2 file=$3 advice=$4 who
    shift 4
    qc "$tool" "$@" "$img"
    expect_failure "$tool" "$img" || return 1
    expect_stderr_match "in use" || return 1
    who="held by qemu-io \(pid $HOLDER\): $advice\$"
    [ "$file" = "$img" ] || who="'$file' is $who"
    expect_stderr_match "; $who" || return 1
    [ "$(wc -l < "$QC_ERR")" -eq 1 ] || { diag "more than one line:"; diag_file "$QC_ERR"; return 1; }
}

case_holder() {
    cd "$(casedir holder)" && mk_chain || return 1
    local rc=0 ro="stop the VM, or use -U for read-only figures"
    hold img.qcow2 || return 1
    refused_by_holder info img.qcow2 img.qcow2 "$ro" || rc=1
    refused_by_holder info img.qcow2 img.qcow2 "$ro" --backing-chain || rc=1
    refused_by_holder check img.qcow2 img.qcow2 "$ro" || rc=1
    refused_by_holder check img.qcow2 img.qcow2 "$ro" --output=json || rc=1
    qc info -U img.qcow2
    expect_rc 0 || rc=1
    release
    return $rc
}
tcase "image held for writing: info and check name qemu-io and its pid" case_holder

case_holder_backing() {
    cd "$(casedir holder-backing)" && mk_chain || return 1
    local rc=0 ro="stop the VM, or use -U for read-only figures"
    hold base.qcow2 || return 1
    refused_by_holder info img.qcow2 base.qcow2 "$ro" --backing-chain || rc=1
    refused_by_holder check img.qcow2 base.qcow2 "$ro" || rc=1
    # read alone, the image is not refused
    qc info img.qcow2
    expect_rc 0 || rc=1
    release
    return $rc
}
tcase "backing file held for writing: the message names it and its holder" case_holder_backing

case_holder_repair() {
    cd "$(casedir holder-repair)" && mk_chain || return 1
    local rc=0
    hold -r img.qcow2 || return 1
    # a reader lets a check run, not a repair
    qc check img.qcow2
    expect_rc 0 || rc=1
    refused_by_holder check img.qcow2 img.qcow2 \
        "stop the VM first: a repair needs the image to itself" -r leaks || rc=1
    release
    return $rc
}
tcase "read-only holder: a repair is refused naming it" case_holder_repair

finish
