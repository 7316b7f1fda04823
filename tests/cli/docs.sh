#!/bin/bash
# docs.sh - the manual pages and the bash completion against the commands.
#
#   - every command's page (and qcow2(3)) renders with man -l, without
#     groff warnings, and has the required sections;
#   - the options of a page's OPTIONS section are exactly those of the
#     command's --help (long and short names), both ways;
#   - every function of the public header is in qcow2(3);
#   - completion/qchain completes exactly the --help options of every
#     command, formats for -f/-F, and the snapshot names of an image
#     (made with qemu-img snapshot -c) for -s/--snapshot/--vmstate.
#
# QCHAIN_MAN_DIR: the rendered pages (ctest: the build's man/; default
# $QCHAIN_BIN/../man).  Without pages (scdoc missing, or
# -DQCHAIN_BUILD_MANPAGES=OFF) the page cases are left out, said so.
. "$(dirname "$0")/lib.sh"

SRC=$(cd "$CLI_DIR/../.." && pwd)
QCHAIN_MAN_DIR=${QCHAIN_MAN_DIR:-$QCHAIN_BIN/../man}
COMPLETION=$SRC/completion/qchain
COMMANDS=(info map export create snapshot commit delta check sum compare
          rebase)
SECTIONS=("NAME" "SYNOPSIS" "DESCRIPTION" "OPTIONS" "EXIT STATUS"
          "JSON OUTPUT" "EXAMPLES" "SEE ALSO")

# help_opts TOOL: the options `qchain-TOOL --help` lists, one a line,
# sorted: the names at the start of each option line ("  -f, --format=FMT")
# and an alias at its end ("...; --json").
help_opts() {
    local line rest
    "$QCHAIN_BIN/qchain-$1" --help | while IFS= read -r line; do
        [[ $line == "  -"* ]] || continue
        rest=${line#  }
        while [[ $rest =~ ^(--?[A-Za-z0-9][-A-Za-z0-9]*)(=[^\ ,]*)?(,\ )? ]]; do
            echo "${BASH_REMATCH[1]}"
            rest=${rest:${#BASH_REMATCH[0]}}
            [ -n "${BASH_REMATCH[3]}" ] || break
        done
        if [[ $line =~ \;\ (--[A-Za-z][-A-Za-z0-9]*)$ ]]; then
            echo "${BASH_REMATCH[1]}"
        fi
    done | sort -u
}

# render PAGE: the page as man shows it, plain text, 80 columns.
render() { MANWIDTH=80 MAN_KEEP_FORMATTING= man -l "$1" 2>/dev/null | col -bx; }

# page_opts PAGE: the options named by the terms of the OPTIONS section
# (the lines indented as terms, not the descriptions under them), sorted.
page_opts() {
    render "$1" | awk '/^OPTIONS$/ { on = 1; next } /^[A-Z]/ { on = 0 }
                       on && /^       -/' |
        grep -oE '(^|[ ,])--?[A-Za-z0-9][-A-Za-z0-9]*' |
        sed 's/^[ ,]*//' | sort -u
}

# case_page PAGE SECTIONS...: renders (exit 0), no warnings, the sections.
case_page() {
    local page=$1 out warn s rc=0
    shift
    [ -f "$page" ] || { diag "no page $page"; return 1; }
    MANWIDTH=80 man -l "$page" > /dev/null 2>&1 ||
        { diag "man -l $page failed"; return 1; }
    warn=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 > /dev/null)
    if [ -n "$warn" ]; then
        diag "warnings rendering $page:"
        printf '%s\n' "$warn" | sed 's/^/#   /'
        rc=1
    fi
    out=$(render "$page")
    for s in "$@"; do
        if ! grep -qx "$s" <<< "$out"; then
            diag "$page: no section $s"
            rc=1
        fi
    done
    return $rc
}

# case_page_opts TOOL: the page's OPTIONS are exactly --help's.
case_page_opts() {
    local tool=$1 page=$QCHAIN_MAN_DIR/qchain-$1.1 want got
    want=$(help_opts "$tool")
    got=$(page_opts "$page")
    [ -n "$want" ] || { diag "no options parsed from --help"; return 1; }
    if [ "$want" != "$got" ]; then
        diag "qchain-$tool: --help and $page list different options"
        diag "only in --help: $(comm -23 <(echo "$want") <(echo "$got") | tr '\n' ' ')"
        diag "only in the page: $(comm -13 <(echo "$want") <(echo "$got") | tr '\n' ' ')"
        return 1
    fi
}

# Every function the public headers declare is in qcow2(3) (the roff:
# the rendered text hyphenates long names).
case_api() {
    local f out rc=0
    out=$(cat "$QCHAIN_MAN_DIR/qcow2.3")
    for f in $(grep -ohE '^QCOW2_API [^(]*\(' "$SRC"/qcow2/include/qcow2/*.h |
               grep -oE 'qcow2_[a-z0-9_]+\($' | tr -d '(' | sort -u); do
        if ! grep -q "$f" <<< "$out"; then
            diag "qcow2(3) does not mention $f"
            rc=1
        fi
    done
    return $rc
}

# complete WORD...: run the completion for a command line whose last word
# is being completed; COMPREPLY's words, one a line.
complete_line() {
    bash --norc --noprofile -c '
        . "$1" || exit 1
        shift
        COMP_WORDS=("$@")
        COMP_CWORD=$(($# - 1))
        COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        _qchain
        printf "%s\n" "${COMPREPLY[@]}"' completion "$COMPLETION" "$@"
}

# expect_words GOT WANT...: GOT (one word a line) holds the words WANT,
# no more, in any order.
expect_words() {
    local got want
    got=$(printf '%s\n' "$1" | sed '/^$/d' | sort)
    shift
    want=$(printf '%s\n' "$@" | sed '/^$/d' | sort)
    if [ "$got" != "$want" ]; then
        diag "completion: expected: $(echo $want)"
        diag "completion: got:      $(echo $got)"
        return 1
    fi
}

# Completing "-" offers exactly the --help options; each completes alone.
case_complete_opts() {
    local tool=$1 want got o one rc=0
    want=$(help_opts "$tool")
    got=$(complete_line "$QCHAIN_BIN/qchain-$tool" -)
    expect_words "$got" $want || rc=1
    for o in $want; do
        one=$(complete_line "$QCHAIN_BIN/qchain-$tool" "$o")
        case $'\n'$one$'\n' in
        *$'\n'"$o"$'\n'* | *$'\n'"$o="$'\n'*) ;;
        *) diag "'$o' does not complete to itself: $(echo $one)"; rc=1 ;;
        esac
    done
    return $rc
}

case_complete_formats() {
    local b=$QCHAIN_BIN
    expect_words "$(complete_line "$b/qchain-info" -f '')" qcow2 raw &&
    expect_words "$(complete_line "$b/qchain-map" --format=r)" raw &&
    expect_words "$(complete_line "$b/qchain-compare" a.qcow2 -F '')" \
                 qcow2 raw &&
    expect_words "$(complete_line "$b/qchain-create" -F q)" qcow2 &&
    expect_words "$(complete_line "$b/qchain-check" --output '=' '')" \
                 human json &&
    expect_words "$(complete_line "$b/qchain-check" -r '')" leaks all
}

case_complete_snapshots() {
    local b=$QCHAIN_BIN
    cd "$(casedir snapshots)" || return 1
    qimg create -q -f qcow2 vm.qcow2 1M || return 1
    qimg snapshot -c before-upgrade vm.qcow2 || return 1
    qimg snapshot -c 'with space' vm.qcow2 || return 1
    qimg snapshot -c other vm.qcow2 || return 1
    expect_words "$(complete_line "$b/qchain-export" vm.qcow2 -s '')" \
        before-upgrade 'with\ space' other &&
    # no image on the line: nothing
    expect_words "$(complete_line "$b/qchain-export" -s '')" &&
    expect_words "$(complete_line "$b/qchain-sum" -U vm.qcow2 -s b)" \
        before-upgrade &&
    expect_words "$(complete_line "$b/qchain-export" -f qcow2 vm.qcow2 \
                    out.raw --snapshot=o)" other &&
    expect_words "$(complete_line "$b/qchain-export" vm.qcow2 --vmstate \
                    '=' w)" 'with\ space' &&
    # -s of qchain-compare is --strict: no argument, files follow
    expect_words "$(complete_line "$b/qchain-compare" vm.qcow2 -s vm.)" \
        vm.qcow2
}

if compgen -G "$QCHAIN_MAN_DIR/*.1" > /dev/null; then
    for t in "${COMMANDS[@]}"; do
        tcase "page qchain-$t renders, sections" case_page \
            "$QCHAIN_MAN_DIR/qchain-$t.1" "${SECTIONS[@]}"
        tcase "page qchain-$t: options of --help" case_page_opts "$t"
    done
    tcase "page qcow2(3) renders, sections" case_page "$QCHAIN_MAN_DIR/qcow2.3" \
        NAME SYNOPSIS DESCRIPTION "RETURN VALUE" ERRORS EXAMPLES "SEE ALSO"
    tcase "page qcow2(3): every public function" case_api
else
    diag "no manual pages in $QCHAIN_MAN_DIR (scdoc missing or" \
         "QCHAIN_BUILD_MANPAGES=OFF): page cases left out"
fi

for t in "${COMMANDS[@]}"; do
    tcase "completion qchain-$t: options of --help" case_complete_opts "$t"
done
tcase "completion: formats and values" case_complete_formats
if [ -n "$QEMU_IMG" ]; then
    tcase "completion: snapshot names" case_complete_snapshots
else
    diag "qemu-img not found: snapshot completion case left out"
fi
finish
