#!/bin/bash
# options.sh - the command lines of qchain-info, qchain-map and
# qchain-export: -h/--help (stdout, exit 0), -V/--version (exit 0), bad
# options, bad values and missing or extra arguments (exit 2, stderr),
# unreadable inputs (exit 1, "qchain-X: 'FILE': ..."), -U, --json,
# -f raw on a qcow2 image (compared with qemu-img -f raw), map's
# --start-offset/--max-length (compared with qemu-img map), and
# qchain-export refusing an existing OUTPUT.
. "$(dirname "$0")/lib.sh"
need_qemu
need_python

W=$TESTTMP/w
setup() {
    mkdir -p "$W" && cd "$W" || return 1
    # single image, a chain, a raw image
    qimg create -q -f qcow2 -o cluster_size=64k img.qcow2 4M &&
        fill qcow2 img.qcow2 4194304 65536 &&
        qimg create -q -f qcow2 -o cluster_size=4k -b img.qcow2 -F qcow2 top.qcow2 5M &&
        fill2 qcow2 top.qcow2 5242880 65536 &&
        qimg create -q -f raw raw.img 2M && fill raw raw.img 2097152 65536 &&
        qimg snapshot -c snap1 img.qcow2 &&
        cp img.qcow2 ./-dash.qcow2
}
if ! (setup) > "$TESTTMP/setup.log" 2>&1; then
    echo "not ok - setup"; sed 's/^/# /' "$TESTTMP/setup.log"
    N_FAIL=$((N_FAIL + 1)); FAILED_CASES+=(setup); finish
fi

# ------------------------------------------------------------- help etc.

case_help() {
    local tool=$1 opt=$2
    qc "$tool" "$opt"
    expect_rc 0 || return 1
    if ! head -n 1 "$QC_OUT" | grep -q "^Usage: qchain-$tool "; then
        diag "stdout should start with 'Usage: qchain-$tool ':"; diag_file "$QC_OUT" 5; return 1
    fi
    if [ -s "$QC_ERR" ]; then diag "stderr not empty:"; diag_file "$QC_ERR"; return 1; fi
    # every long option the usage text mentions is accepted by the parser
    local o
    for o in $(grep -oE -- '--[a-z][a-z-]+' "$QC_OUT" | sort -u); do
        case $o in --help|--version) continue ;; esac
        qc "$tool" "$o" /nonexistent/x /nonexistent/y
        if grep -q "unrecognized option '$o'" "$QC_ERR"; then
            diag "usage mentions $o but the parser rejects it:"; diag_file "$QC_ERR"; return 1
        fi
    done
}

case_version() {
    local tool=$1 opt=$2
    qc "$tool" "$opt"
    expect_rc 0 || return 1
    if ! grep -qE "^qchain-$tool .*[0-9]+\.[0-9]+\.[0-9]+" "$QC_OUT"; then
        diag "stdout should name qchain-$tool and a version:"; diag_file "$QC_OUT" 5; return 1
    fi
    if [ -s "$QC_ERR" ]; then diag "stderr not empty:"; diag_file "$QC_ERR"; return 1; fi
}

# usage_error TOOL ARGS...: exit 2, message on stderr, nothing on stdout
case_usage_error() {
    local tool=$1
    shift
    cd "$W" || return 1
    qc "$tool" "$@"
    expect_rc 2 || return 1
    if ! grep -q "^qchain-$tool: ." "$QC_ERR"; then
        diag "stderr should have a 'qchain-$tool: ' message:"; diag_file "$QC_ERR"; return 1
    fi
    if [ -s "$QC_OUT" ]; then diag "stdout not empty:"; diag_file "$QC_OUT"; return 1; fi
}

# usage_prefix TOOL ARGS...: every stderr line of a usage error but the
# "Try ... --help" hint starts with "qchain-TOOL: " (the program name, not
# the path it was run by), as all of qchain's messages do
case_usage_prefix() {
    local tool=$1 a bad=0
    shift
    cd "$W" || return 1
    for a in "$@"; do
        qc "$tool" $a img.qcow2
        if grep -v "^Try 'qchain-$tool --help'" "$QC_ERR" | grep -qv "^qchain-$tool: "; then
            diag "qchain-$tool $a img.qcow2: stderr lines without the 'qchain-$tool: ' prefix:"
            grep -v "^Try 'qchain-$tool --help'" "$QC_ERR" | grep -v "^qchain-$tool: " | sed 's/^/#   /'
            bad=1
        fi
    done
    return $bad
}

for t in info map export; do
    tcase "$t -h" case_help $t -h
    tcase "$t --help" case_help $t --help
    tcase "$t -V" case_version $t -V
    tcase "$t --version" case_version $t --version
    tcase "$t: unknown short option -Z" case_usage_error $t -Z img.qcow2
    tcase "$t: unknown long option --bogus" case_usage_error $t --bogus img.qcow2
    tcase "$t: --output=xml" case_usage_error $t --output=xml img.qcow2
    tcase "$t: -f vmdk" case_usage_error $t -f vmdk img.qcow2
    tcase "$t: -f without its argument" case_usage_error $t -f
    tcase "$t: no arguments" case_usage_error $t
done
for t in info map export; do
    tcase "$t: usage error messages carry the 'qchain-$t: ' prefix" case_usage_prefix $t -Z --bogus -f --output=xml
done
tcase "info: two images" case_usage_error info img.qcow2 top.qcow2
tcase "map: two images" case_usage_error map img.qcow2 top.qcow2
tcase "export: IMAGE without OUTPUT" case_usage_error export img.qcow2
tcase "export: three arguments" case_usage_error export img.qcow2 a.raw b.raw
tcase "export: -s without its argument" case_usage_error export img.qcow2 out.raw -s
tcase "map: --start-offset=-1" case_usage_error map --start-offset=-1 img.qcow2
tcase "map: --start-offset=abc" case_usage_error map --start-offset=abc img.qcow2
tcase "map: --max-length=1x" case_usage_error map --max-length=1x img.qcow2
tcase "map: --max-length= (empty)" case_usage_error map --max-length= img.qcow2
tcase "map: --start-offset=99999999999999999999" case_usage_error map --start-offset=99999999999999999999 img.qcow2
tcase "map: --start-offset=16E (overflows int64)" case_usage_error map --start-offset=16E img.qcow2

case_version_same() {
    local v1 v2 v3
    qc info -V; v1=$(head -n 1 "$QC_OUT" | awk '{print $NF}')
    qc map -V; v2=$(head -n 1 "$QC_OUT" | awk '{print $NF}')
    qc export -V; v3=$(head -n 1 "$QC_OUT" | awk '{print $NF}')
    expect_eq "map version" "$v1" "$v2" && expect_eq "export version" "$v1" "$v3"
}
tcase "all three print the same version" case_version_same

# ------------------------------------------------------ unreadable inputs

case_no_file() {
    local tool=$1 f=$2 scratch
    scratch=$(casedir nofile) && cd "$W" || return 1
    if [ "$tool" = export ]; then
        qc export "$f" "$scratch/out.raw"
        expect_failure export "$f" || return 1
        [ ! -e "$scratch/out.raw" ] || { diag "out.raw left behind"; return 1; }
    else
        qc "$tool" "$f"
        expect_failure "$tool" "$f"
    fi
}
case_no_file_fmt() {
    local tool=$1 scratch
    scratch=$(casedir empty) && cd "$scratch" || return 1
    : > empty.qcow2
    if [ "$tool" = export ]; then qc export -f qcow2 empty.qcow2 out.raw
    else qc "$tool" -f qcow2 empty.qcow2; fi
    expect_failure "$tool" empty.qcow2
}
for t in info map export; do
    tcase "$t: missing file" case_no_file $t does-not-exist.qcow2
    tcase "$t: a directory" case_no_file $t "$W"
    tcase "$t: empty file, -f qcow2" case_no_file_fmt $t
done

case_raw_as_qcow2() {
    local tool=$1 scratch
    scratch=$(casedir rawq) && cd "$W" || return 1
    if [ "$tool" = export ]; then qc export -f qcow2 raw.img "$scratch/out.raw"
    else qc "$tool" -f qcow2 raw.img; fi
    expect_failure "$tool" raw.img
}
for t in info map export; do
    tcase "$t: -f qcow2 on a raw image fails" case_raw_as_qcow2 $t
done

# ------------------------------------------------------------ -U, --json

case_same_output() {
    # case_same_output TOOL "ARGS A" "ARGS B": identical stdout, both exit 0
    local tool=$1 a b
    cd "$W" || return 1
    qc "$tool" $2; expect_rc 0 || return 1; a=$(cat "$QC_OUT")
    qc "$tool" $3; expect_rc 0 || return 1; b=$(cat "$QC_OUT")
    if [ "$a" != "$b" ]; then
        diag "qchain-$tool $2 and qchain-$tool $3 differ"
        diff <(echo "$a") <(echo "$b") | head -n 20 | sed 's/^/#   /'
        return 1
    fi
}
tcase "map -U" case_same_output map "--output=json top.qcow2" "-U --output=json top.qcow2"
tcase "map --force-share" case_same_output map "top.qcow2" "--force-share top.qcow2"
tcase "info -U" case_same_output info "--output=json top.qcow2" "-U --output=json top.qcow2"
tcase "map --json" case_same_output map "--output=json top.qcow2" "--json top.qcow2"
tcase "info --json" case_same_output info "--output=json --backing-chain top.qcow2" "--json --backing-chain top.qcow2"
tcase "map: options after the image" case_same_output map "--output=json top.qcow2" "top.qcow2 --output=json"
tcase "map -f qcow2" case_same_output map "--output=json top.qcow2" "-f qcow2 --output=json top.qcow2"
tcase "map --format=qcow2" case_same_output map "--output=json top.qcow2" "--format=qcow2 --output=json top.qcow2"
tcase "map -- -dash.qcow2" case_same_output map "--output=json ./-dash.qcow2" "--output=json -- -dash.qcow2"

case_export_opts() {
    local s
    s=$(casedir export-opts) && cd "$W" || return 1
    qimg convert -O raw top.qcow2 "$s/ref.raw" || return 1
    qc export -U top.qcow2 "$s/u.raw"; expect_rc 0 || return 1
    expect_same_bytes "$s/ref.raw" "$s/u.raw" || return 1
    qc export --force-share -f qcow2 top.qcow2 "$s/f.raw"; expect_rc 0 || return 1
    expect_same_bytes "$s/ref.raw" "$s/f.raw" || return 1
    qc export top.qcow2 "$s/j.raw" --output=json; expect_rc 0 || return 1
    expect_same_bytes "$s/ref.raw" "$s/j.raw" || return 1
    if [ -s "$QC_OUT" ] && ! $PY -c 'import json,sys; json.load(open(sys.argv[1]))' "$QC_OUT" 2>/dev/null; then
        diag "export --output=json printed something that is not JSON:"; diag_file "$QC_OUT"; return 1
    fi
    qc export --snapshot=snap1 img.qcow2 "$s/s.raw"; expect_rc 0 || return 1
    qimg convert -l snap1 -O raw img.qcow2 "$s/sref.raw" || return 1
    expect_same_bytes "$s/sref.raw" "$s/s.raw"
}
tcase "export -U, --force-share -f qcow2, --output=json, --snapshot=" case_export_opts

# -------------------------------------------------------------- -f raw

case_f_raw() {
    local img=$1 s
    s=$(casedir "fraw-$img") && cd "$W" || return 1
    qimg map -f raw --output=json "$img" > "$s/map.ref" || return 1
    qc map -f raw --output=json "$img"; expect_rc 0 || return 1
    cp "$QC_OUT" "$s/map.out"
    expect_same_text "$s/map.ref" "$s/map.out" "map -f raw" || return 1
    qimg convert -f raw -O raw "$img" "$s/ref.raw" || return 1
    qc export -f raw "$img" "$s/out.raw"; expect_rc 0 || return 1
    expect_same_bytes "$s/ref.raw" "$s/out.raw" || return 1
    qimg info -f raw --output=json "$img" > "$s/info.ref" || return 1
    qc info -f raw --output=json "$img"; expect_rc 0 || return 1
    cp "$QC_OUT" "$s/info.out"
    $PY "$INFO_COMPARE" "$s/info.ref" "$s/info.out" > "$s/diff" ||
        { diag "info -f raw:"; diag_file "$s/diff"; return 1; }
    qimg info -f raw --output=json --backing-chain "$img" > "$s/info.ref" || return 1
    qc info -f raw --output=json --backing-chain "$img"; expect_rc 0 || return 1
    cp "$QC_OUT" "$s/info.out"
    $PY "$INFO_COMPARE" "$s/info.ref" "$s/info.out" > "$s/diff" ||
        { diag "info -f raw --backing-chain:"; diag_file "$s/diff"; return 1; }
}
tcase "-f raw on a qcow2 image" case_f_raw img.qcow2
tcase "-f raw on a qcow2 overlay (no chain followed)" case_f_raw top.qcow2
tcase "-f raw on a raw image" case_f_raw raw.img

# ----------------------------------------------- --start-offset/--max-length

case_map_range() {
    local img=$1 s
    shift
    s=$(casedir range) && cd "$W" || return 1
    qimg map --output=json "$@" "$img" > "$s/map.ref" 2> "$s/map.err"
    local qrc=$?
    qc map --output=json "$@" "$img"
    expect_eq "exit code (qemu-img map: $qrc)" "$qrc" "$QC_RC" || { diag_file "$QC_ERR"; return 1; }
    expect_clean || return 1
    cp "$QC_OUT" "$s/map.out"
    expect_same_text "$s/map.ref" "$s/map.out" "map --output=json $*"
}
for img in img.qcow2 top.qcow2; do
    tcase "map $img --start-offset=0 --max-length=64k" case_map_range $img --start-offset=0 --max-length=64k
    tcase "map $img --start-offset=64k" case_map_range $img --start-offset=64k
    tcase "map $img --start-offset=1M --max-length=1M" case_map_range $img --start-offset=1M --max-length=1M
    tcase "map $img --start-offset=1536 --max-length=4608 (unaligned)" case_map_range $img --start-offset=1536 --max-length=4608
    tcase "map $img --start-offset 100 --max-length 1 (separate args)" case_map_range $img --start-offset 100 --max-length 1
    tcase "map $img --max-length=1" case_map_range $img --max-length=1
    tcase "map $img --max-length=1G (past the end)" case_map_range $img --max-length=1G
    tcase "map $img --start-offset=1.5k" case_map_range $img --start-offset=1.5k
    tcase "map $img --start-offset=0.5M --max-length=0.25M" case_map_range $img --start-offset=0.5M --max-length=0.25M
    tcase "map $img --start-offset=3M --max-length=600000" case_map_range $img --start-offset=3M --max-length=600000
    tcase "map $img --start-offset=4194303 (last byte of img)" case_map_range $img --start-offset=4194303
    tcase "map $img --max-length=0" case_map_range $img --max-length=0
    tcase "map $img --start-offset=16M (past the end)" case_map_range $img --start-offset=16M
done
tcase "map img.qcow2 --start-offset=4M (exactly the end)" case_map_range img.qcow2 --start-offset=4M
tcase "map raw.img --start-offset=100k --max-length=1M" case_map_range raw.img --start-offset=100k --max-length=1M
tcase "map top.qcow2 -f raw --start-offset=64k --max-length=64k" case_map_range top.qcow2 -f raw --start-offset=64k --max-length=64k

# ------------------------------------------------- export never overwrites

case_export_existing() {
    local s sum1 sum2 m1 m2
    s=$(casedir existing) && cd "$W" || return 1
    printf 'precious\n' > "$s/out.raw"
    touch -d '2001-01-01 00:00:00' "$s/out.raw"
    sum1=$(md5sum < "$s/out.raw"); m1=$(stat -c '%Y %s %i' "$s/out.raw")
    qc export img.qcow2 "$s/out.raw"
    expect_rc 1 || return 1
    expect_stderr_match "^qchain-export: " || return 1
    sum2=$(md5sum < "$s/out.raw"); m2=$(stat -c '%Y %s %i' "$s/out.raw")
    expect_eq "content of the existing OUTPUT" "$sum1" "$sum2" || return 1
    expect_eq "mtime, size, inode of the existing OUTPUT" "$m1" "$m2"
}
tcase "export refuses an existing OUTPUT, leaves it untouched" case_export_existing

case_export_existing_empty() {
    local s
    s=$(casedir existing-empty) && cd "$W" || return 1
    : > "$s/out.raw"
    qc export img.qcow2 "$s/out.raw"
    expect_rc 1 || return 1
    expect_eq "size of the existing empty OUTPUT" 0 "$(stat -c %s "$s/out.raw")"
}
tcase "export refuses an existing empty OUTPUT" case_export_existing_empty

case_export_symlink() {
    local s
    s=$(casedir symlink-out) && cd "$W" || return 1
    printf 'target\n' > "$s/target"
    ln -s target "$s/link.raw"
    ln -s nowhere "$s/dangling.raw"
    qc export img.qcow2 "$s/link.raw"
    expect_rc 1 || return 1
    expect_eq "symlink target content" target "$(cat "$s/target")" || return 1
    qc export img.qcow2 "$s/dangling.raw"
    expect_rc 1 || return 1
    if [ -e "$s/nowhere" ]; then diag "export followed a dangling symlink and created its target"; return 1; fi
}
tcase "export refuses OUTPUT symlinks (existing and dangling)" case_export_symlink

case_export_same_file() {
    cd "$W" || return 1
    local sum1
    sum1=$(md5sum < img.qcow2)
    qc export img.qcow2 img.qcow2
    expect_rc 1 || return 1
    expect_eq "image content" "$sum1" "$(md5sum < img.qcow2)"
}
tcase "export IMAGE IMAGE: refused, image untouched" case_export_same_file

case_export_bad_dir() {
    cd "$W" || return 1
    qc export img.qcow2 "$TESTTMP/no/such/dir/out.raw"
    expect_rc 1 || return 1
    expect_stderr_match "^qchain-export: "
}
tcase "export into a missing directory: exit 1" case_export_bad_dir

case_export_bad_snapshot() {
    local s
    s=$(casedir badsnap) && cd "$W" || return 1
    qc export -s nosuchsnap img.qcow2 "$s/out.raw"
    expect_failure export img.qcow2 || return 1
    expect_stderr_match "nosuchsnap" || return 1
    [ ! -e "$s/out.raw" ] || { diag "out.raw left behind"; return 1; }
    qc export -s 99 img.qcow2 "$s/out.raw"
    expect_failure export img.qcow2 || return 1
    [ ! -e "$s/out.raw" ] || { diag "out.raw left behind"; return 1; }
}
tcase "export -s of a missing snapshot: exit 1, no OUTPUT" case_export_bad_snapshot

case_export_stdout_dev() {
    # OUTPUT that exists as a device: refused like any existing file
    cd "$W" || return 1
    qc export img.qcow2 /dev/null
    expect_rc 1
}
tcase "export to /dev/null (exists): refused" case_export_stdout_dev

case_export_sparse() {
    local s
    s=$(casedir sparse) && cd "$W" || return 1
    qimg create -q -f qcow2 big.qcow2 1G && qio -f qcow2 -c "write -P 1 512M 4k" big.qcow2 || return 1
    qc export big.qcow2 "$s/out.raw"; expect_rc 0 || return 1
    expect_eq "size" 1073741824 "$(stat -c %s "$s/out.raw")" || return 1
    local blocks
    blocks=$(stat -c %b "$s/out.raw")
    if [ "$blocks" -gt 64 ]; then diag "1 GiB export with 4 KiB of data allocates $blocks blocks"; return 1; fi
    rm -f big.qcow2
}
tcase "export of a 1 GiB image with 4 KiB of data is sparse" case_export_sparse

finish
