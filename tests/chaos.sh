#!/usr/bin/env bash
# The chaos run (make chaos): PAGES pages (default 1000) through two nodes
# on Redis, then through two nodes on one SQLite file, while processes are
# killed under them, and a count of what came back.
#   tests/chaos.sh [PAGES]     (BUILD=build, OCRPOOL, FIXTURES as tests/run.sh)
#
# Each run: node A runs the tesseract engine, node B the null engine with a
# per-page sleep (OCRPOOL_NULL_SLEEP_MS); most pages are a small blank image
# (node A sleeps on those too, through OCRPOOL_FAULT), one in 20 is a real
# page (on Redis it goes to the queue "real" that only node A reads, so
# tesseract reads it; on SQLite either node may take it). Every 0.2-1 s
# the script kill -9s, at random, a worker, a zygote or a master of either
# node (a master is started again at once with the same arguments, as a
# supervisor would) and, on Redis, redis-server itself (appendonly yes,
# appendfsync always; started again on the same AOF). The first kills of a
# run (every 0.3 s) take each kind once, a master first (CHAOS_FIRST), so
# that even a short run kills a master, restarts Redis, and so on. It kills
# only what it started, by pid: the masters and redis-server are its
# children, the zygotes and workers are found below a master in
# /proc/PID/task/*/children.
# One time in ten, instead of a kill, a master is frozen (SIGSTOP) for 3 s,
# past its lease, then let go (SIGCONT): a live node that fell silent, whose
# pages the other node takes meanwhile (CHAOS_FREEZE=0: kills only).
# The kills stop when every page has a result or 60% of the run's time is
# spent; then the nodes converge and stop warm.
#
# CHAOS_BROKERS="redis sqlite" (the runs to make), CHAOS_SLEEP_MS=150 (a blank
# page's time), CHAOS_LIMIT (seconds a run may take; 40 + 0.3 a page),
# CHAOS_KEEP=1 (keep the scratch folder and its logs), CHAOS_FIRST="master redis
# zygote worker" (the kinds the first kills take, in order; those that a broker does not
# have are left out: redis on SQLite; empty: every kill at random).
#
# Settings that make it converge fast: --lease-timeout 2 (SQLite) and
# --visibility-timeout 2 (Redis), so a dead node's pages go back within
# seconds; --max-deliveries 1000, so kills never bury a page (there is no
# retry delay to shorten: a lost page goes back to its queue at once);
# --prefetch-multiplier 1.
#
# The end is read as a user would: on Redis by Celery's AsyncResult, on
# SQLite by `ocrpool status --json --tasks` and `ocrpool result` (every
# page's stored result, read back by one call for the run's group).
# tests/chaos_check.py says what "lost" and "duplicated" count (a page
# re-run after its worker was killed is expected, and only reported).
# One line per broker, then the last line:
#   chaos: N pages, K kills, L lost, D duplicated
# Exit status 1 when L or D is above 0 (or a run could not be made).
set -uo pipefail
cd "$(dirname "$0")/.."
PAGES=${1:-1000}
BUILD=${BUILD:-build}
OCRPOOL=${OCRPOOL:-$PWD/$BUILD/ocrpool}
FIXTURES=${FIXTURES:-$PWD/$BUILD/fixtures}
PY=/usr/bin/python3 # Debian's, with python3-celery
CHK="$PY $PWD/tests/chaos_check.py"
SLEEP_MS=${CHAOS_SLEEP_MS:-150}
# Time for one broker's run; the kills stop at 60% of it.
LIMIT=${CHAOS_LIMIT:-$((40 + PAGES * 3 / 10))}
BROKERS=${CHAOS_BROKERS:-redis sqlite} # the runs to make
FREEZE=${CHAOS_FREEZE:-1}              # 0: no freezes, only kills
FIRST=${CHAOS_FIRST-master redis zygote worker} # the first kills' kinds, in order

if ! command -v redis-server >/dev/null || ! $PY -c 'import celery, redis' 2>/dev/null; then
    echo "chaos: redis-server and python3-celery are needed (scripts/install-deps.sh)" >&2
    exit 1
fi
[ -x "$OCRPOOL" ] && [ -f "$FIXTURES/eng.png" ] || {
    echo "chaos: no $OCRPOOL or $FIXTURES/eng.png (make all, tests/data/make-fixtures.sh)" >&2
    exit 1
}

T=$(mktemp -d)
export XDG_RUNTIME_DIR=$T/run
mkdir -m 700 "$XDG_RUNTIME_DIR"
export OCRPOOL_LOG_LEVEL=info
# What this script started and has not reaped: the masters, redis-server and
# the watcher (a pid once reaped may be anyone's: it is dropped from these).
declare -A MPID # node -> its master's pid
RPID= WATCH=
cleanup() {
    local p
    for p in "${MPID[@]}" $RPID $WATCH; do ours "$p" $$ && kill -9 "$p"; done
    for p in "${MPID[@]}" $RPID $WATCH; do wait "$p" 2>/dev/null; done # (not the stderr filter)
    [ -n "${CHAOS_KEEP:-}" ] && echo "# kept $T" || rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
# Bash reports each child killed here ("Killed ..."): those are the point, not news.
exec 2> >(grep --line-buffered -v ': line [0-9]*: *[0-9]* Killed  ' >&2)
say() { echo "# $*"; }
# ours PID PARENT: PID is alive and PARENT's child (so not a pid reused by another).
ours() {
    local stat
    [ -n "$1" ] && stat=$(cat /proc/"$1"/stat 2>/dev/null) || return 1
    stat=${stat##*) }
    set -- "$1" "$2" $stat
    [ "$4" = "$2" ] && [ "$3" != Z ]
}

# A blank 64x64 grey PNG: the null pages' file.
$PY -c "
import struct, sys, zlib
def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
raw = b''.join(b'\0' + b'\xff' * 64 for _ in range(64))
sys.stdout.buffer.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 64, 64, 8, 0, 0, 0, 0))
                        + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))" >"$T/blank.png"
cp "$FIXTURES/eng.png" "$T/real.png"
N_REAL=$((PAGES / 20))
N_NULL=$((PAGES - N_REAL))

# --- the nodes ------------------------------------------------------------
ARGS_A=() ARGS_B=()
start_node() { # start_node A|B: the node's master, with the node's arguments
    local n=$1
    local -n args=ARGS_$n
    local fault= # node A (tesseract) sleeps on the blank pages as node B's null engine does
    [ "$n" = A ] && fault="sleep:$(awk "BEGIN{print $SLEEP_MS/1000}"):blank"
    OCRPOOL_NULL_LOG="$RUN/null.log" OCRPOOL_NULL_SLEEP_MS=$SLEEP_MS OCRPOOL_FAULT=$fault \
        "$OCRPOOL" worker "${args[@]}" >>"$RUN/$n.log" 2>&1 &
    MPID[$n]=$!
}
children() { cat /proc/"$1"/task/*/children 2>/dev/null; }
zygotes() { children "${MPID[$1]}"; }
workers() {
    local z
    for z in $(zygotes "$1"); do children "$z"; done
}
# alive_or_restart: a master that exited by itself is started again (and said).
SELF_EXITS=0
alive_or_restart() {
    local n
    for n in A B; do
        ours "${MPID[$n]}" $$ && continue
        wait "${MPID[$n]}" 2>/dev/null
        say "node $n's master ${MPID[$n]} exited by itself (status $?): started again"
        echo "$(date +%T.%N) master ${MPID[$n]} (node $n) exited by itself" >>"$RUN/kills.log"
        SELF_EXITS=$((SELF_EXITS + 1))
        start_node "$n"
    done
}
pick() { # pick WORDS...: one at random
    [ $# -gt 0 ] || return 1
    local a=("$@")
    echo "${a[RANDOM % $#]}"
}

# --- Redis ----------------------------------------------------------------
RPID=
start_redis() {
    redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$RUN/redis" --save "" \
        --appendonly yes --appendfsync always --daemonize no >>"$RUN/redis.log" 2>&1 &
    RPID=$!
    for _ in $(seq 100); do
        redis-cli -p "$RPORT" ping 2>/dev/null | grep >/dev/null PONG && return 0
        sleep 0.1
    done
    return 1
}

# --- one kill -------------------------------------------------------------
KILLS=0
declare -A KILLED
# freeze_one NODE (unless CHAOS_FREEZE=0): SIGSTOP the node's master past its lease
# (3 s against 2), then SIGCONT: a node that was alive all along but silent,
# whose pages another node may have taken meanwhile (issue 15, point 6).
FREEZES=0
freeze_one() {
    local victim=${MPID[$1]}
    ours "$victim" $$ || return 0
    kill -STOP "$victim" 2>/dev/null || return 0
    echo "$(date +%T.%N) freeze master $victim (node $1) for 3 s" >>"$RUN/kills.log"
    sleep 3
    kill -CONT "$victim" 2>/dev/null
    FREEZES=$((FREEZES + 1))
}

# FORCE: the kinds still to kill before kills are picked at random (new_run sets it
# from CHAOS_FIRST); a kind leaves it once a process of that kind was killed.
FORCE=()
kill_one() { # kill_one BROKER: kill -9 one process at random; counts it when it was there
    local node what victim r=$((RANDOM % 100))
    node=$(pick A B)
    if [ ${#FORCE[@]} -gt 0 ]; then
        what=${FORCE[0]}
    elif [ "$1" = redis ] && [ $r -ge 90 ]; then
        what=redis
    elif [ $r -lt 55 ]; then
        what=worker
    elif [ $r -lt 72 ]; then
        what=zygote
    else
        what=master
    fi
    if [ ${#FORCE[@]} -eq 0 ] && [ "$FREEZE" = 1 ] && [ $((RANDOM % 10)) -eq 0 ]; then
        freeze_one "$node"
        return 0
    fi
    local parent=$$
    case $what in
    worker) victim=$(pick $(workers "$node")) || return 0 ;;
    zygote) victim=$(pick $(zygotes "$node")) || return 0 ;;
    master) victim=${MPID[$node]} ;;
    redis) victim=$RPID node= ;;
    esac
    [ "$what" = worker ] && parent=$(awk '{print $4}' /proc/"$victim"/stat 2>/dev/null)
    [ "$what" = zygote ] && parent=${MPID[$node]}
    ours "$victim" "$parent" || return 0
    kill -9 "$victim" 2>/dev/null || return 0
    KILLS=$((KILLS + 1))
    KILLED[$what]=$((${KILLED[$what]:-0} + 1))
    [ ${#FORCE[@]} -gt 0 ] && [ "${FORCE[0]}" = "$what" ] && FORCE=("${FORCE[@]:1}")
    echo "$(date +%T.%N) kill -9 $what $victim${node:+ (node $node)}" >>"$RUN/kills.log"
    case $what in
    master)
        wait "$victim" 2>/dev/null
        sleep 0.2 # a supervisor's restart delay
        start_node "$node"
        ;;
    redis)
        wait "$victim" 2>/dev/null
        sleep 0.3
        start_redis || say "redis-server did not start again"
        ;;
    esac
}

progress() { cat "$RUN/watch.json.progress" 2>/dev/null || echo 0; }

# chaos BROKER: kills until every page has a result (and each kind of FORCE was
# killed) or 60% of LIMIT, then waits for the rest until LIMIT.
chaos() {
    local t0=$SECONDS
    while [ $((SECONDS - t0)) -lt $((LIMIT * 6 / 10)) ] &&
        { [ "$(progress)" -lt "$PAGES" ] || [ ${#FORCE[@]} -gt 0 ]; }; do
        if [ ${#FORCE[@]} -gt 0 ]; then sleep 0.3; else sleep "0.$((RANDOM % 8 + 2))"; fi
        alive_or_restart
        kill_one "$1"
    done
    while [ $((SECONDS - t0)) -lt "$LIMIT" ] && [ "$(progress)" -lt "$PAGES" ]; do
        sleep 0.5
        alive_or_restart
    done
    say "$1: $(progress) of $PAGES pages finished after $((SECONDS - t0)) s"
    [ ${#FORCE[@]} -eq 0 ] || say "$1: never killed (no such process found in time): ${FORCE[*]}"
}

# stop_nodes: warm stop (SIGTERM), then kill -9 what is still there after 20 s.
stop_nodes() {
    local n p
    for n in A B; do ours "${MPID[$n]}" $$ && kill -TERM "${MPID[$n]}"; done
    for n in A B; do
        p=${MPID[$n]}
        for _ in $(seq 200); do ours "$p" $$ || break; sleep 0.1; done
        ours "$p" $$ && kill -9 "$p" && say "node $n did not stop in 20 s"
        wait "$p" 2>/dev/null
        MPID[$n]=
    done
}

# watch_end: the watcher takes a last look and writes its record.
watch_end() {
    touch "$RUN/watch.json.stop"
    wait "$WATCH" 2>/dev/null
    WATCH=
}

# result_line BROKER RC: the broker's line from the verdict's output.
TOTAL_KILLS=0 TOTAL_LOST=0 TOTAL_DUP=0 FAILED=0
result_line() {
    local v l d
    v=$(grep '^LOST ' "$RUN/verdict.out")
    sed 's/^/  /' "$RUN/verdict.out" | grep -v '^  LOST '
    if [ -z "$v" ]; then
        say "$1: no verdict"
        FAILED=1
        l=$PAGES d=0
    else
        l=$(echo "$v" | awk '{print $2}')
        d=$(echo "$v" | awk '{print $4}')
    fi
    local kinds=""
    for k in worker zygote master redis; do kinds+=" ${KILLED[$k]:-0} $k"; done
    echo "chaos $1: $PAGES pages, $KILLS kills ($kinds ), $l lost, $d duplicated" \
        "($(echo "$v" | awk '{print $6}') re-run, $FREEZES freezes, $SELF_EXITS masters exited by themselves)"
    TOTAL_KILLS=$((TOTAL_KILLS + KILLS))
    TOTAL_LOST=$((TOTAL_LOST + l))
    TOTAL_DUP=$((TOTAL_DUP + d))
}

new_run() { # new_run NAME: a fresh folder and counters
    local k
    RUN=$T/$1
    FORCE=()
    for k in $FIRST; do [ "$k" = redis ] && [ "$1" != redis ] || FORCE+=("$k"); done
    mkdir -p "$RUN/redis"
    : >"$RUN/null.log"
    KILLS=0
    FREEZES=0
    SELF_EXITS=0
    KILLED=()
}

run_redis() {
    new_run redis
    RPORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    URL="redis://127.0.0.1:$RPORT/0"
    if start_redis; then
        common=(--broker "$URL" -c 2 --prefetch-multiplier 1 --visibility-timeout 2
            --max-deliveries 1000 --allow-root "$T")
        ARGS_A=("${common[@]}" --engine tesseract -Q real,celery)
        ARGS_B=("${common[@]}" --engine null -Q celery)
        $CHK send "$URL" "$RUN/ids" "$N_NULL" "$N_REAL" "$T/blank.png" "$T/real.png" ||
            say "redis: the Celery producer failed"
        $CHK watch-redis "$URL" "$RUN/ids" "$RUN/watch.json" >"$RUN/watch.out" 2>&1 &
        WATCH=$!
        for _ in $(seq 100); do [ -e "$RUN/watch.json.subscribed" ] && break; sleep 0.1; done
        start_node A
        start_node B
        chaos redis
        stop_nodes
        watch_end
        $CHK verdict-redis "$URL" "$RUN/ids" "$RUN/watch.json" "$RUN/null.log" >"$RUN/verdict.out" 2>&1
        result_line redis
        redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1
        wait "$RPID" 2>/dev/null
        RPID=
    else
        say "redis-server did not start"
        FAILED=1
    fi
}

run_sqlite() {
    new_run sqlite
    URL="sqlite://$RUN/queue.db"
    common=(--broker "$URL" -c 2 --prefetch-multiplier 1 --lease-timeout 2 --max-deliveries 1000)
    ARGS_A=("${common[@]}" --engine tesseract)
    ARGS_B=("${common[@]}" --engine null)
    # The same mix as on Redis, one real page in 20, sent by `ocrpool submit`.
    files=() kinds=()
    every=$((N_REAL > 0 ? PAGES / N_REAL : 0))
    for k in $(seq 0 $((PAGES - 1))); do
        if [ "$every" -gt 0 ] && [ $((k % every)) -eq $((every / 2)) ]; then
            files+=("$T/real.png") kinds+=(real)
        else
            files+=("$T/blank.png") kinds+=(null)
        fi
    done
    "$OCRPOOL" submit --broker "$URL" --group chaos "${files[@]}" >"$RUN/ids.raw" \
        2>"$RUN/submit.err" ||
        say "sqlite: submit failed: $(head -c 300 "$RUN/submit.err")"
    paste -d' ' "$RUN/ids.raw" <(printf '%s\n' "${kinds[@]}") | awk 'NF == 2' >"$RUN/ids"
    $CHK watch-sqlite "$OCRPOOL" "$URL" "$RUN/ids" "$RUN/watch.json" >"$RUN/watch.out" 2>&1 &
    WATCH=$!
    start_node A
    start_node B
    chaos sqlite
    stop_nodes
    watch_end
    $CHK verdict-sqlite "$OCRPOOL" "$URL" "$RUN/ids" "$RUN/watch.json" "$RUN/null.log" chaos \
        >"$RUN/verdict.out" 2>&1
    result_line sqlite
}

runs=0
for b in $BROKERS; do
    case $b in
    redis) run_redis ;;
    sqlite) run_sqlite ;;
    *) say "unknown broker $b" && FAILED=1 ;;
    esac
    runs=$((runs + 1))
done
echo "chaos: $((PAGES * runs)) pages, $TOTAL_KILLS kills, $TOTAL_LOST lost, $TOTAL_DUP duplicated"
[ "$FAILED" -eq 0 ] && [ "$TOTAL_LOST" -eq 0 ] && [ "$TOTAL_DUP" -eq 0 ]
