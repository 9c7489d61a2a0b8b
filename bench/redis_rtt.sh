#!/usr/bin/env bash
# The Redis path's cost per page (issue 18), measured live, not part of `make test`:
# M pages (a small PNG, --engine null: no pixels read) sent by Debian's Python Celery
# client (send_task of ocrpool.ocr_page) to a redis-server of its own, then consumed by
# `ocrpool worker -c 2`. Printed per page:
#   commands     every command Redis ran (INFO commandstats: those a script runs count
#                too), by command
#   requests     the commands the worker sent (MONITOR, a script's own lines left out), and
#                of them those on the broker's connection (the others are the node's events
#                and remote control: non-blocking, never waited for)
#   round trips  the waits for Redis's answers on the broker's connection, as the worker
#                counts them itself (its debug "redis: ... round trips" line at exit); a
#                build that says nothing sends one command per wait there, so its broker
#                requests are shown (*)
# The window runs from the worker's start (its first commands included) to the moment the
# queue and unacked are empty; the tasks are queued before it, so the client's own
# commands are not in it, and the poller's (LLEN, HLEN, INFO) are left out by name.
#
#   bench/redis_rtt.sh [M]                      this build (M=200)
#   BEFORE=path/to/old/ocrpool bench/redis_rtt.sh [M]   that binary too, side by side
# PORT (default 16399) is the redis-server's port; WORKER_ARGS are added to the worker's
# (WORKER_ARGS="--track-started -E": a STARTED meta and Celery's task events per page).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
OCRPOOL=${OCRPOOL:-$BUILD/ocrpool}
PY=/usr/bin/python3 # Debian's, with python3-celery
m=${1:-200}
port=${PORT:-16399}
work=$(mktemp -d)
rpid=""
mpid=""
wpid=""
cleanup() {
    for p in $wpid $mpid $rpid; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap 'cleanup 2>/dev/null' EXIT
rc() { redis-cli -p "$port" "$@"; }

$PY bench/tiny_png.py "$work/tiny.png"

redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
rpid=$!
for _ in $(seq 50); do rc ping >/dev/null 2>&1 && break; sleep 0.1; done

# measure BINARY LABEL: writes $work/LABEL.{stats,req,rtt}
measure() {
    local bin=$1 label=$2 url="redis://127.0.0.1:$port/0"
    rc flushall >/dev/null
    $PY - "$url" "$work/tiny.png" "$m" <<'PYEOF'
import sys
from celery import Celery
app = Celery("bench", broker=sys.argv[1], backend=sys.argv[1])
for _ in range(int(sys.argv[3])):
    app.send_task("ocrpool.ocr_page", args=[sys.argv[2], "eng"])
PYEOF
    [ "$(rc llen celery)" -eq "$m" ] || { echo "the client queued $(rc llen celery) of $m"; exit 1; }
    rc config resetstat >/dev/null
    redis-cli -p "$port" monitor >"$work/$label.mon" &
    mpid=$!
    sleep 0.3
    # shellcheck disable=SC2086 # WORKER_ARGS: several words
    "$bin" worker --broker "$url" --allow-root / --engine null -c 2 --log-level debug ${WORKER_ARGS:-} \
        >"$work/$label.log" 2>&1 &
    wpid=$!
    local t0
    t0=$(date +%s.%N)
    for _ in $(seq 600); do
        sleep 0.1
        [ "$(rc llen celery)" = 0 ] && [ "$(rc hlen unacked)" = 0 ] && break
    done
    local t1
    t1=$(date +%s.%N)
    rc info commandstats >"$work/$label.stats"
    kill "$wpid"
    wait "$wpid" 2>/dev/null || true
    wpid=""
    sleep 0.2
    kill "$mpid"
    wait "$mpid" 2>/dev/null || true
    mpid=""
    local done_n
    done_n=$(rc --scan --pattern 'celery-task-meta-*' | wc -l)
    [ "$done_n" -eq "$m" ] || { echo "$label: $done_n results of $m"; exit 1; }
    awk -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.2f\n", t1 - t0 }' >"$work/$label.secs"
    # Requests: MONITOR's lines from a client (not "[0 lua]"), the poller's commands left out.
    # The broker's connection is the one that sends the scripts; the others are the node's
    # events and remote control (non-blocking, never waited for).
    grep -v '^OK' "$work/$label.mon" | grep -v ' lua\] ' |
        grep -v -i -E '\] "(llen|hlen|info|config|monitor|ping)"' | grep '^[0-9]' |
        awk '{ n[$3]++ } $4 == "\"EVAL\"" && !b { b = $3 }
             END { t = 0; for (a in n) t += n[a]; print t, n[b] + 0 }' >"$work/$label.req"
    grep -o 'redis: [0-9]* requests in [0-9]* round trips' "$work/$label.log" |
        awk '{ r += $5 } END { print (NR ? r : "") }' >"$work/$label.rtt" || true
}

# per LABEL: "cmd calls" per command, the poller's commands left out
stats() {
    sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),.*/\1 \2/p' "$work/$1.stats" |
        grep -v -E '^(llen|hlen|info|config\|resetstat|monitor|ping|scan) '
}

labels=()
if [ -n "${BEFORE:-}" ]; then
    measure "$BEFORE" before
    labels+=(before)
fi
measure "$OCRPOOL" now
labels+=(now)

per() { awk -v a="$1" -v m="$m" 'BEGIN { printf "%.2f", a / m }'; }
row() { # row NAME VALUE-per-label...
    printf '%-14s' "$1"
    shift
    for v in "$@"; do printf ' %10s' "$v"; done
    printf '\n'
}
echo "redis_rtt: $m null-engine pages sent by a Celery client, worker -c 2 ${WORKER_ARGS:-}(per page)"
row "" "${labels[@]}"
tot=()
req=()
rtt=()
secs=()
breq=()
for l in "${labels[@]}"; do
    tot+=("$(per "$(stats "$l" | awk '{ s += $2 } END { print s + 0 }')")")
    read -r all broker <"$work/$l.req"
    req+=("$(per "$all")")
    breq+=("$(per "$broker")")
    r=$(cat "$work/$l.rtt")
    if [ -n "$r" ]; then rtt+=("$(per "$r")"); else rtt+=("$(per "$broker")*"); fi
    secs+=("$(cat "$work/$l.secs")")
done
row "commands" "${tot[@]}"
row "requests" "${req[@]}"
row "  broker conn" "${breq[@]}"
row "round trips" "${rtt[@]}"
row "seconds (all)" "${secs[@]}"
echo "by command:"
cmds=$(for l in "${labels[@]}"; do stats "$l"; done | awk '{ print $1 }' | sort -u)
for c in $cmds; do
    vals=()
    for l in "${labels[@]}"; do
        vals+=("$(per "$(stats "$l" | awk -v c="$c" '$1 == c { print $2 }' | awk '{ s += $1 } END { print s + 0 }')")")
    done
    row "  $c" "${vals[@]}"
done
echo "(* round trips: the build does not count them; one command per wait, its broker requests)"
