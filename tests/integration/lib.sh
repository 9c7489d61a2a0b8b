# Shared by the integration tests: checks that print TAP-ish lines
# ("ok - name" / "not ok - name"), a scratch folder, and helpers.
set -uo pipefail
: "${OCRPOOL:?}" "${FIXTURES:?}"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TMP=$(mktemp -d)
# Processes a test starts in the background go in PIDS: at exit they are killed, by pid
# (only what the test started), and the scratch folder goes (OCP_KEEP_TMP=1 keeps it).
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    chmod -R u+rwx "$TMP" 2>/dev/null
    if [ -n "${OCP_KEEP_TMP:-}" ]; then echo "# scratch folder kept: $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
# freeport: a loopback port free now.
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Runs of `ocrpool ocr` without -o keep their queues here until they complete.
export XDG_STATE_HOME=$TMP/state
_failed=0

ok() { echo "ok - $*"; }
# skip REASON: a check that cannot run here; tests/run.sh counts it as skipped, never passed.
skip() { echo "skip - $*"; }
not_ok() {
    echo "not ok - $*"
    _failed=1
}

# check NAME CMD...: passes when CMD exits 0.
check() {
    local name=$1
    shift
    if "$@"; then ok "$name"; else not_ok "$name"; fi
}

# cer REF HYP: character error rate of HYP against REF (files), whitespace normalised.
cer() { python3 "$here/../../tools/cer.py" "$1" "$2"; }

# cer_below REF HYP MAX: passes when the CER is at most MAX.
cer_below() {
    local v
    v=$(cer "$1" "$2") || return 1
    echo "# CER $(basename "$2") vs $(basename "$1"): $v (max $3)"
    python3 -c "import sys; sys.exit(0 if float('$v') <= float('$3') else 1)"
}

# peak_rss_kb FILE: the peak RSS that /usr/bin/time -f %M wrote as FILE's last line.
peak_rss_kb() { tail -1 "$1"; }

# wait_log LOG PATTERN [SECONDS]: until a line of LOG matches (default 30 s).
wait_log() {
    local t=0
    while [ $t -lt $((${3:-30} * 10)) ]; do
        grep -q -- "$2" "$1" && return 0
        sleep 0.1
        t=$((t + 1))
    done
    return 1
}

finish() { exit $_failed; }
