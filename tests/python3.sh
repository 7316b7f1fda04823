# python3.sh - Debian's python3 where there is one (sourced by the test
# libraries): a version manager's shim first on PATH (pyenv's) costs
# 0.18 s a call against 0.06 s, and the suite makes thousands of calls
# (477 in commit/delta.sh alone).
if [ -x /usr/bin/python3 ]; then python3() { /usr/bin/python3 "$@"; }; fi
