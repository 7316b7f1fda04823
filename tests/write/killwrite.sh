#!/usr/bin/env bash
# The randomized writer killed with SIGKILL at random moments: every image
# it leaves must pass `qemu-img check` without corruption (leaked clusters
# are allowed: exit 0 or 3), and still read back.
set -u
RW=${RANDWRITE:?}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; cd "$work"
fails=0; cases=0
kills=${KILLS:-12}
for cfg in "cluster_size=65536" "cluster_size=4096,refcount_bits=64" \
           "cluster_size=512" "cluster_size=65536,extended_l2=on" \
           "cluster_size=4096,compat=0.10"; do
    for k in $(seq 1 "$kills"); do
        cases=$((cases+1))
        rm -f img.qcow2 model.raw
        qemu-img create -q -f qcow2 -o "$cfg" img.qcow2 16M
        truncate -s 16M model.raw
        "$RW" img.qcow2 model.raw "$k" 100000000 --flush-every 50 &
        pid=$!
        # 20..400 ms
        sleep "0.$(printf '%03d' $(( (RANDOM % 380) + 20 )))"
        kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
        out=$(qemu-img check img.qcow2 2>&1); rc=$?
        if [ $rc -ne 0 ] && [ $rc -ne 3 ]; then
            fails=$((fails+1))
            echo "not ok - $cfg kill $k: qemu-img check exit $rc"
            echo "$out" | head -5
        elif ! qemu-img convert -O raw img.qcow2 view.raw 2>/dev/null; then
            fails=$((fails+1)); echo "not ok - $cfg kill $k: unreadable"
        else
            echo "ok - $cfg kill $k (check exit $rc)"
        fi
    done
done
echo "$((cases-fails)) passed, $fails failed"
[ $fails -eq 0 ]
