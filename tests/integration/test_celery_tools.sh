#!/usr/bin/env bash
# An ocrpool node as a Celery worker to Celery's own tools, on a real
# redis-server (started here): with Debian's Celery 5.2 and with the current
# Celery (and Flower) in a virtualenv under build/ that this test makes from
# PyPI (skipped, with the reason, when PyPI cannot be reached): send_task,
# group, chain and chord with a Python body on a Python worker, revoke
# (before a page starts, and with terminate), each `celery inspect` and
# `celery control` command, events, a mixed cluster (one Python worker and
# the node on the same queue: `inspect ping` answers both, `control shutdown`
# stops both), autoscaling, --statedb, and Flower's API and workers page
# (a Chromium screenshot is kept in $OCP_TEST_OUT). Each process is started
# once and reused.
source "$(dirname "$0")/lib.sh"
T0=$SECONDS
F=$FIXTURES
PY52=/usr/bin/python3 # Debian's, with python3-celery
ROOT=$(cd "$here/../.." && pwd)
VENV=$ROOT/${BUILD:-build}/celery-venv
T="$here/celery_tools.py"
export OCRPOOL_LOG_LEVEL=info

if ! command -v redis-server >/dev/null || ! $PY52 -c 'import celery, redis' 2>/dev/null; then
    not_ok "redis-server and python3-celery are installed (scripts/install-deps.sh)"
    finish
fi

PORT=$(freeport)
export TOOLS_BROKER="redis://127.0.0.1:$PORT/0"
mkdir -p "$TMP/redis"
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$TMP/redis" --save "" --daemonize no \
    >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$PORT" ping 2>/dev/null | grep >/dev/null PONG && break; sleep 0.1; done
check "redis-server starts on a loopback port" bash -c "redis-cli -p $PORT ping | grep >/dev/null PONG"

HOST=$($PY52 -c 'import socket; print(socket.gethostname())')
NODE="ocr1@$HOST"
PYNODE="py1@$HOST"
cp "$F/eng.png" "$TMP/slow1.png"
cp "$F/eng.png" "$TMP/slow2.png"
cp "$F/eng.png" "$TMP/slow3.png"

# The node: named with Celery's %h, task events from the start (-E), autoscaling, a statedb;
# pages whose name has "slow" take 4 s more (fault injection), for terminate and autoscale.
start_node() {
    OCRPOOL_FAULT=sleep:4:slow "$OCRPOOL" worker --broker "$TOOLS_BROKER" --allow-root / \
        -Q ocr,celery -E --hostname 'ocr1@%h' --statedb "$TMP/state.json" --autoscale 3,1 "$@" \
        >>"$TMP/node.log" 2>&1 &
    NPID=$!
    PIDS+=("$NPID")
    wait_log "$TMP/node.log" "listens on /0.celery.pidbox" 60
}
# A Python Celery worker of celery_tools (the chord's body, the chain's second step, and a
# task of ocrpool's name) on the queues py and celery, with the interpreter $1.
start_py() {
    (cd "$here" && exec "$1" -m celery -A celery_tools worker -Q py,celery -n 'py1@%h' -c 1 \
        --without-gossip --loglevel=warning >>"$TMP/py.log" 2>&1) &
    PYPID=$!
    PIDS+=("$PYPID")
    local t0=$SECONDS
    # Each ping waits 3 s for the answer (a loaded machine answers late), for 180 s at most.
    while [ $((SECONDS - t0)) -lt 180 ]; do
        (cd "$here" && "$1" -m celery -A celery_tools inspect ping -d "$PYNODE" -t 3 2>/dev/null) |
            grep pong >/dev/null && return 0
        kill -0 "$PYPID" 2>/dev/null || break
        sleep 0.2
    done
    echo "# the Python worker did not answer a ping ($( kill -0 "$PYPID" 2>/dev/null && echo alive || echo ended)); its log:"
    tail -15 "$TMP/py.log" | sed 's/^/#   /'
    return 1
}
# tools PY NAME ARGS...: one of celery_tools.py's checks with interpreter PY.
tools() {
    local py=$1 name=$2
    shift 2
    (cd "$here" && timeout 150 "$py" "$T" "$@") >"$TMP/$name.out" 2>&1
    local rc=$?
    grep '^#' "$TMP/$name.out"
    [ $rc -eq 0 ] || tail -5 "$TMP/$name.out"
    echo "# $name: until $((SECONDS - T0)) s"
    return $rc
}
# gone PID SECONDS: the process ended within SECONDS.
gone() {
    for _ in $(seq $(($2 * 10))); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    return 1
}

check "the ocrpool node starts and listens on the pidbox channel" start_node
check "a Python Celery 5.2 worker starts beside it" start_py "$PY52"

# --- each Celery version: the same checks ---

run_version() { # run_version PY LABEL
    local py=$1 v=$2
    echo "# $v from $((SECONDS - T0)) s"
    check "$v: send_task, group, chain and chord (Python body)" tools "$py" "canvas-$v" canvas "$NODE" "$F/eng.png"
    check "$v: revoke before a page starts and with terminate" tools "$py" "revoke-$v" revoke "$NODE" "$F/eng.png" "$TMP/slow1.png"
    check "$v: celery inspect: each command's reply" tools "$py" "inspect-$v" inspect "$NODE"
    check "$v: celery control: each command's reply" tools "$py" "control-$v" control "$NODE"
    check "$v: worker and task events" tools "$py" "events-$v" events "$NODE" "$F/eng.png" "$TMP/slow2.png"
    check "$v: mixed cluster: inspect ping answers both, the shared queue is served" tools "$py" "mixed-$v" mixed "$NODE" "$PYNODE" "$F/eng.png"
}
run_version "$PY52" "celery-5.2"

# Autoscale: three slow pages waiting make the node grow to its maximum (3).
for s in slow2 slow3 slow1; do
    (cd "$here" && $PY52 -c "from celery_tools import app; app.send_task('ocrpool.ocr_page', args=['$TMP/$s.png', 'eng'], queue='ocr')")
done
check "autoscale: pages waiting grow the pool to its maximum" wait_log "$TMP/node.log" "autoscale up: concurrency [12] -> 3" 20
echo "# autoscale: until $((SECONDS - T0)) s"
# pool_grow and pool_shrink refuse an n that is huge (its sum with the concurrency overflowed
# and left a pool of 0 workers), negative, or not a whole number (it was taken for 1).
LOGN=$(wc -l <"$TMP/node.log")
(cd "$here" && $PY52 -c "
import json; from celery_tools import app
ns = [2**63 - 1, 2**63 - 2, 2**63 - 3, -1, 'x', 2.5]
print(json.dumps([app.control.broadcast(c, arguments={'n': n}, reply=True, destination=['$NODE'],
                                        timeout=5) for c in ('pool_grow', 'pool_shrink') for n in ns]))"
) >"$TMP/pool-n.json" 2>&1
check "pool_grow/pool_shrink: a huge, negative or fractional n is refused" "$PY52" -c "
import json,sys; r=json.load(open('$TMP/pool-n.json'))
sys.exit(0 if len(r) == 12 and all(x and 'error' in x[0].get('$NODE', {}) for x in r) else 1)"
check "pool_grow/pool_shrink: the concurrency did not change" bash -c "! tail -n +$((LOGN + 1)) '$TMP/node.log' | grep >/dev/null 'pool_grow: concurrency\|pool_shrink: concurrency'"

# --- the current Celery and Flower, from PyPI, in a virtualenv made here ---
VPY=""
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import celery, flower, kombu.transport.redis' 2>/dev/null; then
    VPY=$VENV/bin/python
else
    rm -rf "$VENV"
    if "$PY52" -m venv "$VENV" >"$TMP/venv.log" 2>&1 &&
        timeout 600 "$VENV/bin/pip" install -q "celery[redis]" packaging flower >>"$TMP/venv.log" 2>&1; then
        VPY=$VENV/bin/python
    else
        skip "current Celery and Flower: PyPI cannot be reached (pip: $(tail -1 "$TMP/venv.log"))"
        rm -rf "$VENV"
    fi
fi

if [ -n "$VPY" ]; then
    CV=$("$VPY" -c 'import celery; print(celery.__version__)')
    FV=$("$VPY" -c 'import flower; print(flower.__version__)')
    echo "# current Celery $CV, Flower $FV"
    # The Python worker becomes the current Celery's.
    kill -TERM "$PYPID" 2>/dev/null
    check "the Celery 5.2 worker stops" gone "$PYPID" 30
    echo "# the 5.2 worker stopped: until $((SECONDS - T0)) s"
    check "a Python Celery $CV worker starts beside the node" start_py "$VPY"
    # Its mingle asked the node for the revoked ids (hello): it knows those of the 5.2 run.
    (cd "$here" && "$VPY" -m celery -A celery_tools inspect revoked -d "$PYNODE" -t 5 --json) >"$TMP/py-revoked.json" 2>/dev/null
    check "mingle: the Python worker took the node's revoked ids at its start (hello)" grep -q "revoked-before" "$TMP/py-revoked.json"
    run_version "$VPY" "celery-$CV"

    FPORT=$(freeport)
    (cd "$here" && FLOWER_UNAUTHENTICATED_API=true exec "$VPY" -m celery -A celery_tools flower --port="$FPORT" --address=127.0.0.1 \
        >"$TMP/flower.log" 2>&1) &
    PIDS+=($!)
    # A page finished while Flower listens, so its tasks page shows it.
    sleep 4
    (cd "$here" && "$VPY" -c "from celery_tools import app; print(app.send_task('ocrpool.ocr_page', args=['$F/eng.png', 'eng'], queue='ocr').get(timeout=60)['id'])") >"$TMP/flower-task" 2>&1
    FTASK=$(tail -1 "$TMP/flower-task")
    api() { "$PY52" -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:$FPORT$1', timeout=20).read().decode())"; }
    for _ in $(seq 40); do api /api/workers 2>/dev/null | grep >/dev/null "$NODE" && break; sleep 0.5; done
    check "flower $FV: /api/workers lists $NODE" bash -c "$(declare -f api); FPORT=$FPORT PY52=$PY52 api /api/workers | grep >/dev/null '\"$NODE\"'"
    api /api/workers >"$TMP/flower-workers.json" 2>/dev/null
    check "flower: the node's stats in /api/workers (its pool's processes)" "$PY52" -c "
import json,sys; w=json.load(open('$TMP/flower-workers.json')).get('$NODE', {})
sys.exit(0 if w.get('stats', {}).get('pool', {}).get('processes') and w.get('registered') == ['ocrpool.ocr_page'] else 1)"
    for _ in $(seq 20); do api "/api/tasks" 2>/dev/null | grep >/dev/null "$FTASK" && break; sleep 0.5; done
    api "/api/task/info/$FTASK" >"$TMP/flower-task.json" 2>/dev/null
    check "flower: the finished page $FTASK is SUCCESS on $NODE" "$PY52" -c "
import json,sys; t=json.load(open('$TMP/flower-task.json'))
print('# flower task:', t.get('state'), t.get('worker'), t.get('runtime'))
sys.exit(0 if t.get('state') == 'SUCCESS' and t.get('worker') == '$NODE' else 1)"
    api "/tasks/datatable?draw=1&start=0&length=50&search%5Bvalue%5D=&order%5B0%5D%5Bcolumn%5D=0&order%5B0%5D%5Bdir%5D=asc&columns%5B0%5D%5Bdata%5D=name" >"$TMP/flower-tasks.json" 2>/dev/null
    check "flower: its tasks page lists the finished page" grep -q "$FTASK" "$TMP/flower-tasks.json"
    if command -v chromium >/dev/null; then
        shots=${OCP_TEST_OUT:-$TMP}
        flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
            --disable-background-networking --disable-component-update --disable-sync
            --user-data-dir="$TMP/chrome" --window-size=1300,800 --virtual-time-budget=5000)
        timeout 60 chromium "${flags[@]}" --dump-dom "http://127.0.0.1:$FPORT/workers" >"$TMP/flower-dom.html" 2>/dev/null
        check "flower's workers page (Chromium) shows $NODE" grep -q "$NODE" "$TMP/flower-dom.html"
        timeout 60 chromium "${flags[@]}" --screenshot="$shots/flower-workers.png" "http://127.0.0.1:$FPORT/workers" >/dev/null 2>&1
        check "flower's workers page: screenshot saved" test -s "$shots/flower-workers.png"
        echo "# screenshot: $shots/flower-workers.png"
    else
        not_ok "chromium is not installed (scripts/install-deps.sh installs it)"
    fi
    SPY=$VPY
else
    SPY=$PY52
fi

# An idle node lets its extra workers go, one per 10 s idle, down to the minimum.
check "autoscale: idle, the pool shrinks" wait_log "$TMP/node.log" "autoscale down: concurrency" 25

# --- control shutdown stops both nodes of the mixed cluster (warm) ---
(cd "$here" && "$SPY" -m celery -A celery_tools control shutdown -t 1 >/dev/null 2>&1)
check "celery control shutdown: the ocrpool node stops" gone "$NPID" 30
check "celery control shutdown: the Python worker stops" gone "$PYPID" 30
check "the node said it stops warm" grep -q "remote control: shutdown (warm)" "$TMP/node.log"

# --- --statedb: the revoked ids outlive the node; the memory budget bounds pool_grow ---
check "statedb: written at the stop" grep -q "revoked-before" "$TMP/state.json"
: >"$TMP/node.log"
start_node --memory-budget 1
(cd "$here" && $PY52 -m celery -A celery_tools inspect revoked -d "$NODE" -t 5 --json) >"$TMP/revoked.json" 2>/dev/null
check "statedb: a restarted node still lists the revoked ids" grep -q "revoked-before" "$TMP/revoked.json"
# While revokes come, the statedb is written at most every 20 s (it was every second: 50000
# ids are some 15 MB), and at the stop.
revoke_id() { (cd "$here" && $PY52 -c "from celery_tools import app; app.control.revoke('$1')"); }
in_state() { for _ in $(seq $(($2 * 5))); do grep -q "$1" "$TMP/state.json" && return 0; sleep 0.2; done; return 1; }
revoke_id throttle-1
check "statedb: a revoke is written within 25 s" in_state throttle-1 25
revoke_id throttle-2
check "statedb: the next revoke is not written at once (3 s later)" bash -c "sleep 3; ! grep -q throttle-2 '$TMP/state.json'"
check "statedb: ...but within 20 s" in_state throttle-2 22
echo "# statedb: until $((SECONDS - T0)) s"
wait_log "$TMP/node.log" "worker .* ready" 30
(cd "$here" && $PY52 -m celery -A celery_tools control pool_grow 1 -d "$NODE" -t 5 --json) >"$TMP/grow.json" 2>/dev/null
check "pool_grow is refused beyond --memory-budget ($(cat "$TMP/grow.json"))" grep -q "memory-budget 1 MB holds no more workers" "$TMP/grow.json"
# Redis goes away and comes back: the node goes on and answers again (its mailbox's
# connections come back by themselves).
kill -TERM "${PIDS[0]}"
sleep 2
check "Redis away: the node goes on" kill -0 "$NPID"
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$TMP/redis" --save "" --daemonize no \
    >>"$TMP/redis.log" 2>&1 &
PIDS+=($!)
wait_log "$TMP/node.log" "remote control: .*connected again" 30
(cd "$here" && $PY52 -m celery -A celery_tools inspect ping -d "$NODE" -t 5 --json) >"$TMP/ping2.json" 2>/dev/null
check "Redis back: inspect ping answers again" grep -q pong "$TMP/ping2.json"
kill -TERM "$NPID"
check "the restarted node stops on SIGTERM" gone "$NPID" 30
echo "# done in $((SECONDS - T0)) s"
finish
