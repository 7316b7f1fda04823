# Shared helpers of the write-path tests (sourced).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../python3.sh"
. "$(dirname "${BASH_SOURCE[0]}")/../holder.sh"
: "${QCHAIN_BIN:?}"
work=$(mktemp -d); trap 'cleanup_all' EXIT
cleanup_hooks=()
cleanup_all() {
    local h
    release
    for h in "${cleanup_hooks[@]+"${cleanup_hooks[@]}"}"; do eval "$h"; done
    rm -rf "$work"
}
cd "$work"
fails=0; cases=0
ok() { cases=$((cases+1)); echo "ok - $1"; }
bad() { cases=$((cases+1)); fails=$((fails+1)); echo "not ok - $1: $2"; }
finish() { echo "$((cases-fails)) passed, $fails failed"; [ $fails -eq 0 ]; }
# json_get FILE PATH... : value at a key path (python), "<absent>" if none
json_get() {
    python3 - "$@" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for k in sys.argv[2:]:
    if isinstance(d, list):
        d = d[int(k)]
    elif k in d:
        d = d[k]
    else:
        print("<absent>"); sys.exit(0)
print(json.dumps(d))
PY
}
# signal_when_exists PID FILE SIGNAL [MAX_MS]: send SIGNAL (STOP, KILL,
# ...) to PID as soon as FILE exists (polled every millisecond), or a
# random 0..MAX_MS milliseconds later; fails when PID ends first or after
# 60 s
signal_when_exists() {
    python3 - "$1" "$2" "$3" "${4:-0}" <<'PY'
import os, random, signal, sys, time
pid, path, sig = int(sys.argv[1]), sys.argv[2], sys.argv[3]
delay = random.uniform(0, int(sys.argv[4]) / 1000.0)
end = time.time() + 60
while not os.path.exists(path):
    try:
        st = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0]
    except OSError:
        sys.exit(1)
    if st == "Z" or time.time() > end:
        sys.exit(1)
    time.sleep(0.001)
time.sleep(delay)
os.kill(pid, getattr(signal, "SIG" + sig))
PY
}
