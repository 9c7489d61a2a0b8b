#!/usr/bin/env bash
# Several machines: ocrpool's worker on a real redis-server (started here,
# on a loopback port, in a scratch folder), driven by Debian's Python Celery
# client with no Python worker running: send_task/AsyncResult, a group's
# progress, a worker killed mid-page on one of two nodes, a node lost, Redis
# restarted mid-run, malformed messages, and `ocrpool submit` consumed by a
# Python Celery worker. Failure kinds are stored and read back through the
# broker interface (build/tests/test_broker redis URL) and by Celery.
source "$(dirname "$0")/lib.sh"
F=$FIXTURES
PY=/usr/bin/python3 # Debian's, with python3-celery (not a python3 of another origin)
CC="$PY $here/celery_check.py"
export OCRPOOL_LOG_LEVEL=info

if ! command -v redis-server >/dev/null || ! $PY -c 'import celery, redis' 2>/dev/null; then
    not_ok "redis-server and python3-celery are installed (scripts/install-deps.sh)"
    finish
fi


PORT=$(freeport)
URL="redis://127.0.0.1:$PORT/0"
mkdir -p "$TMP/redis"
start_redis() {
    redis-server --port "$PORT" --bind 127.0.0.1 --dir "$TMP/redis" --save "" \
        --appendonly yes --appendfsync always --daemonize no >>"$TMP/redis.log" 2>&1 &
    RPID=$!
    PIDS+=("$RPID")
    for _ in $(seq 100); do
        redis-cli -p "$PORT" ping 2>/dev/null | grep >/dev/null PONG && return 0
        sleep 0.1
    done
    return 1
}
rcli() { redis-cli -p "$PORT" "$@"; }
start_node() { # start_node LOG [flags]: a worker node on Redis, pid in $WPID
    local log=$1
    shift
    # Any path: these tests name fixtures, scratch files and the API's spool
    # (test_untrusted.sh checks the roots themselves).
    "$OCRPOOL" worker --broker "$URL" --allow-root / "$@" >"$log" 2>&1 &
    WPID=$!
    PIDS+=("$WPID")
    wait_log "$log" "node .*[0-9] workers\?, prefetch" 30
}
stop_node() { kill -TERM "$1" 2>/dev/null && wait "$1"; }
log_pid() { grep -m1 -- "$2" "$1" | awk '{print $2}'; }

check "redis-server starts on a loopback port" start_redis
check "rediss:// is refused: no TLS in Debian's hiredis" bash -c \
    "'$OCRPOOL' status --broker rediss://127.0.0.1:$PORT/0 2>&1 | grep >/dev/null 'TLS (rediss://) is not supported'"
check "a Redis that is not there: a clear error" bash -c \
    "'$OCRPOOL' status --broker redis://127.0.0.1:1/0 2>&1 | grep >/dev/null 'redis 127.0.0.1:1: cannot connect: Connection refused'"
check "a bad database number: a clear error" bash -c \
    "'$OCRPOOL' status --broker redis://127.0.0.1:$PORT/x 2>&1 | grep >/dev/null 'bad database number'"

# --- failure kinds: stored with a failure or a burial, read back by ocrpool and by Celery ---
# (database 5 and a queue of its own: nothing else in this test sees these pages)
"${BUILD:-build}/tests/test_broker" redis "redis://127.0.0.1:$PORT/5" >"$TMP/kinds.log" 2>&1
check "failure kinds round-trip through Redis: fail with each, release to burial, get, list" \
    test $? -eq 0
grep -E '^\[  (FAILED|ERROR)|^ERROR' "$TMP/kinds.log" | sed 's/^/# /'
check "a failed page's meta is Celery's, with its kind beside it: AsyncResult raises its exception" \
    $PY - "redis://127.0.0.1:$PORT/5" "$TMP/kinds.log" <<'PYEOF'
import json, sys
import redis
from celery import Celery
url, log = sys.argv[1], sys.argv[2]
app = Celery(broker=url, backend=url)
r = redis.Redis.from_url(url)
exc = {"input": "OCRError", "soft_time_limit": "SoftTimeLimitExceeded", "memory_budget": "OCRError",
       "malformed": "OCRError", "crashed": "WorkerLostError", "buried-memory_limit": "WorkerLostError"}
seen = 0
for line in open(log):
    if not line.startswith("# ") or len(line.split()) != 3:
        continue
    _, kind, tid = line.split()
    meta = json.loads(r.get("celery-task-meta-" + tid))
    assert set(meta) >= {"status", "result", "traceback", "children", "date_done", "task_id"}, meta
    assert meta["ocrpool_failure"] == kind.replace("buried-", ""), (kind, meta)
    assert meta.get("ocrpool_buried", False) == kind.startswith("buried-"), (kind, meta)
    res = app.AsyncResult(tid)
    assert res.state == "FAILURE", (kind, res.state)
    assert type(res.result).__name__ == exc[kind], (kind, type(res.result).__name__)
    seen += 1
assert seen == 6, seen
print("# ok: 6 failed pages: Celery's FAILURE with the kind's exception, the kind beside it")
PYEOF

mkdir -p "$TMP/p"
for i in $(seq -w 1 12); do cp "$F/eng.png" "$TMP/p/page$i.png"; done
for i in $(seq -w 1 10); do cp "$F/eng.png" "$TMP/p/slow$i.png"; done

# --- 1. send_task -> ocrpool worker -> AsyncResult.get ----------------------
start_node "$TMP/n1.log" -c 2
N1=$WPID
check "1. send_task; AsyncResult.get returns the page, read by the default engine (lstm)" \
    $CC "$URL" one "$F/eng.png" lstm
check "1. inline bytes, formats, PDF page, eta, expires, bad arguments, unknown task" \
    $CC "$URL" extras "$F/eng.png" "$F/two.pdf"
check "the worker logged the unknown task name" grep -q "ocrpool.no_such_task is not registered here" "$TMP/n1.log"
check "an expired task's meta is REVOKED with the kind 'revoked' beside it" $PY - "$URL" "$OCRPOOL" "$F/eng.png" <<'PYEOF'
import datetime, json, subprocess, sys
import redis
from celery import Celery
url, ocrpool, png = sys.argv[1:4]
app = Celery(broker=url, backend=url)
past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=10)
r = app.send_task("ocrpool.ocr_page", args=[png, "eng"], expires=past)
try:
    r.get(timeout=30)
except Exception:
    pass
meta = json.loads(redis.Redis.from_url(url).get("celery-task-meta-" + r.id))
print("#", meta.get("status"), meta.get("ocrpool_failure"))
assert meta["status"] == "REVOKED" and meta["ocrpool_failure"] == "revoked", meta
PYEOF
check "nothing is left unacknowledged" test "$(rcli hlen unacked)" -eq 0

# --- 2. a group of 10 pages: GroupResult progress ----------------------------
check "2. a group of 10: completed_count reaches 10" $CC "$URL" group 10 "$TMP"/p/page*.png
grp=$(rcli --scan --pattern 'ocrpool.group.*' | head -1 | cut -d. -f3-)
"$OCRPOOL" status --broker "$URL" --json "$grp" >"$TMP/st2.json"
check "2. ocrpool status counts the group's 10 pages done" \
    $PY -c "import json; d=json.load(open('$TMP/st2.json')); assert d['done'] == 10 and d['total'] == 10, d"
check "a warm stop exits 0" stop_node "$N1"

# --- track-started: STARTED, then SUCCESS -----------------------------------
OCRPOOL_FAULT=sleep:1:slow01 start_node "$TMP/ts.log" -c 1 --track-started
id=$($PY -c "
from celery import Celery
print(Celery(broker='$URL', backend='$URL').send_task('ocrpool.ocr_page', args=['$TMP/p/slow01.png']).id)")
check "--track-started: the page is seen STARTED, then SUCCESS" $CC "$URL" started "$id" 60
check "--track-started node: warm stop exits 0" stop_node "$WPID"

# --- The Tesseract engine through the Celery task (the default is our own recognizer) ---
start_node "$TMP/tess.log" -c 1 --engine tesseract
check "send_task to a node with --engine tesseract: the page read by libtesseract" \
    $CC "$URL" one "$F/eng.png" tesseract
check "--engine tesseract node: warm stop exits 0" stop_node "$WPID"

# --- 3. two nodes; kill -9 a worker of one mid-page; then lose a whole node ---
$CC "$URL" send "$TMP/ids3" "$TMP"/p/slow*.png >/dev/null
: >"$TMP/watch3"
$CC "$URL" watch "$TMP/ids3" "$TMP/watch3" 180 >"$TMP/watch3.out" 2>&1 &
WATCH=$!
PIDS+=("$WATCH")
wait_log "$TMP/watch3" subscribed 30
OCRPOOL_FAULT=sleep:1.5:slow start_node "$TMP/a.log" -c 2 --visibility-timeout 3
A=$WPID
OCRPOOL_FAULT=sleep:1.5:slow start_node "$TMP/b.log" -c 1 --visibility-timeout 3
B=$WPID
wait_log "$TMP/a.log" "fault injection: sleeping" 30
victim=$(log_pid "$TMP/a.log" "fault injection: sleeping")
kill -9 "$victim"
# Then node B dies whole (its master and workers), in the middle of a page.
wait_log "$TMP/b.log" "fault injection: sleeping" 30
kill -9 "$B"
wait "$B" 2>/dev/null
wait "$WATCH"
check "3. every page completes, each result stored and published once" test $? -eq 0
cat "$TMP/watch3.out"
check "3. the killed worker's page went back to the queue" grep -q "worker $victim crashed: killed by signal 9" "$TMP/a.log"
check "3. the lost node's page was restored after the visibility timeout" grep -q "restored an unacknowledged message" "$TMP/a.log"
check "3. nothing is left unacknowledged" test "$(rcli hlen unacked)" -eq 0
check "3. node A: warm stop exits 0" stop_node "$A"

# --- 4. redis-server (appendonly) restarted mid-run --------------------------
$CC "$URL" send "$TMP/ids4" "$TMP"/p/slow0[1-8].png >/dev/null
OCRPOOL_FAULT=sleep:1:slow start_node "$TMP/r.log" -c 2
wait_log "$TMP/r.log" "fault injection: sleeping" 30
rcli shutdown >/dev/null 2>&1
wait "$RPID" 2>/dev/null
sleep 2
start_redis
check "4. every page completes across the restart" $CC "$URL" wait "$TMP/ids4" 120
check "4. the worker saw Redis go and come back" grep -q "connected again" "$TMP/r.log"
check "4. nothing is left unacknowledged" test "$(rcli hlen unacked)" -eq 0
check "4. the node is alive" kill -0 "$WPID"
check "4. warm stop exits 0" stop_node "$WPID"

# --- 5. malformed messages pushed raw ----------------------------------------
start_node "$TMP/bad.log" -c 1 --max-input-size 1
good=$($PY - "$URL" "$F/eng.png" <<'PYEOF'
import base64, json, sys, uuid
from celery import Celery
url, png = sys.argv[1], sys.argv[2]
def msg(body, headers=None, encoding="base64"):
    h = {"lang": "py", "task": "ocrpool.ocr_page", "id": str(uuid.uuid4()), "retries": 0,
         "timelimit": [None, None], "eta": None, "expires": None, "group": None}
    h.update(headers or {})
    return json.dumps({"body": body, "content-encoding": "utf-8", "content-type": "application/json",
                       "headers": h, "properties": {"body_encoding": encoding, "delivery_tag": str(uuid.uuid4()),
                       "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0}})
bad = {
    "junk": "this is not JSON {",
    "array": "[1, 2, 3]",
    "noheaders": json.dumps({"body": "e30="}),
    "badb64": msg("!!!not base64!!!"),
    "badbody": msg(base64.b64encode(b'{"args": 1}').decode()),
    "wrongtypes": msg(base64.b64encode(json.dumps([{"a": 1}, [], {}]).encode()).decode()),
    "v1": json.dumps({"body": "e30=", "headers": {"id": "x"}, "properties": {}}),
    "oversize": msg(base64.b64encode(json.dumps([[png, "eng"], {"pad": "x" * 1500000}, {}]).encode()).decode()),
}
import redis
r = redis.Redis.from_url(url)
for name, m in bad.items():
    r.lpush("celery", m)
    if name == "badb64":
        print("BADB64", json.loads(m)["headers"]["id"])
app = Celery(broker=url, backend=url)
print("GOOD", app.send_task("ocrpool.ocr_page", args=[png, "eng"]).id)
PYEOF
)
badid=$(echo "$good" | awk '/BADB64/ {print $2}')
goodid=$(echo "$good" | awk '/GOOD/ {print $2}')
echo "$goodid" >"$TMP/ids5"
check "5. the good message after the bad ones is done" $CC "$URL" wait "$TMP/ids5" 60
check "5. the worker survived" kill -0 "$WPID"
check "5. eight malformed messages are in the dead-letter list" test "$(rcli llen ocrpool.deadletter)" -eq 8
rcli lrange ocrpool.deadletter 0 -1 | $PY -c 'import json,sys
for l in sys.stdin:
    print("# dead letter:", json.loads(l)["reason"][:90])'
check "5. each dead letter says why" bash -c "rcli() { redis-cli -p $PORT \"\$@\"; }; rcli lrange ocrpool.deadletter 0 -1 | grep -c '\"reason\"' | grep -x >/dev/null 8"
check "5. a malformed message with an id fails that id with the reason" bash -c \
    "redis-cli -p $PORT get celery-task-meta-$badid | grep >/dev/null 'MalformedMessage.*bad base64'"
check "5. the worker logged them" test "$(grep -c 'dead-lettered' "$TMP/bad.log")" -eq 8
check "5. nothing is left unacknowledged" test "$(rcli hlen unacked)" -eq 0
check "5. warm stop exits 0" stop_node "$WPID"

# --- The HTTP API on Redis (as deploy/docker-compose.yml runs it) ------------
HPORT=$(freeport)
"$OCRPOOL" serve --no-workers --listen "127.0.0.1:$HPORT" --broker "$URL" --allow-root "$F" \
    --spool-dir "$TMP/spool" >"$TMP/api.log" 2>&1 &
API=$!
PIDS+=("$API")
start_node "$TMP/h.log" -c 2
check "the API submits to Redis and reads results from it" $PY - "$HPORT" "$F" <<'PYEOF'
import json, sys, time, urllib.request
base, F = "http://127.0.0.1:%s" % sys.argv[1], sys.argv[2]
def call(method, path, body=None):
    r = urllib.request.Request(base + path, data=body, method=method,
                               headers={"Content-Type": "application/json"})
    for _ in range(50):
        try:
            with urllib.request.urlopen(r, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError:
            time.sleep(0.1)  # the API is still starting
    return 0, b""
s, b = call("POST", "/v1/jobs", json.dumps({"paths": [F + "/eng.png", F + "/two.pdf"]}).encode())
j = json.loads(b)
assert s == 202 and len(j["tasks"]) == 3, (s, b)
for _ in range(600):
    s, b = call("GET", "/v1/groups/" + j["group"])
    g = json.loads(b)
    if s == 200 and g.get("done", 0) == 3:
        break
    time.sleep(0.1)
assert g.get("done") == 3, g
s, b = call("GET", "/v1/jobs/%s/result?format=txt" % j["tasks"][0]["id"])
assert s == 200 and b"quick brown fox" in b, (s, b[:200])
print("# ok: 3 pages through POST /v1/jobs, GET /v1/groups, GET /v1/jobs/ID/result on Redis")
PYEOF
check "HTTP node: warm stop exits 0" stop_node "$WPID"
kill -TERM "$API" 2>/dev/null
wait "$API" 2>/dev/null

# --- 6. ocrpool submit -> a Python Celery worker -----------------------------
ids6=$("$OCRPOOL" submit --broker "$URL" -l san "$F/san.png" "$F/two.pdf")
check "6. ocrpool submit queues 3 pages (one task id each)" test "$(echo "$ids6" | wc -l)" -eq 3
(cd "$here" && PEER_BROKER="$URL" exec $PY -m celery -A celery_peer worker -c 1 -P solo \
    --without-gossip --without-mingle --without-heartbeat -l warning >"$TMP/peer.log" 2>&1) &
PEER=$!
PIDS+=("$PEER")
echo "$ids6" >"$TMP/ids6"
check "6. the Python Celery worker consumed them all" $CC "$URL" wait "$TMP/ids6" 90
last=$(echo "$ids6" | tail -1)
"$OCRPOOL" result --broker "$URL" --format json "$last" >"$TMP/r6.json" 2>&1
check "6. it saw the path, the language and page 2 as arguments" \
    $PY -c "import json,sys; d=json.load(open('$TMP/r6.json')); sys.exit(0 if d['peer']=='python-celery' and d['source'].endswith('two.pdf') and d['lang']=='san' and d['page']==2 else 1)"
kill -TERM "$PEER" 2>/dev/null
wait "$PEER" 2>/dev/null

# --- Password and database index from the URL --------------------------------
rcli config set requirepass 's3cret pass' >/dev/null
check "a password and a database index from the URL: submit lands in db 2" bash -c \
    "'$OCRPOOL' submit --broker 'redis://:s3cret%20pass@127.0.0.1:$PORT/2' '$F/eng.png' >/dev/null &&
     test \"\$(redis-cli -p $PORT -a 's3cret pass' --no-auth-warning -n 2 llen celery)\" -eq 1"
check "a wrong password: a clear error" bash -c \
    "'$OCRPOOL' status --broker 'redis://:wrong@127.0.0.1:$PORT/2' 2>&1 | grep >/dev/null 'AUTH: WRONGPASS'"
# --- The URL's password is never shown --------------------------------------------
# The worker is told the URL only through OCRPOOL_BROKER: its command line, log (info),
# `monitor --json`, `control stats` and Celery's inspect answers must not hold the
# password, in either spelling (escaped as in the URL, or plain).
PW_URL="redis://:s3cret%20pass@127.0.0.1:$PORT/3"
no_pw() { ! grep -qE 's3cret|%20pass' "$@"; }
OCRPOOL_BROKER=$PW_URL "$OCRPOOL" worker --allow-root / -c 1 >"$TMP/pw.log" 2>&1 &
PWPID=$!
PIDS+=("$PWPID")
check "a password in OCRPOOL_BROKER: the node starts and logs its broker as redis://:***@" \
    wait_log "$TMP/pw.log" "node .*broker redis://:\*\*\*@127.0.0.1:$PORT/3" 30
pw_id=$(OCRPOOL_BROKER=$PW_URL "$OCRPOOL" submit "$F/eng.png")
pw_done() {
    for _ in $(seq 120); do
        OCRPOOL_BROKER=$PW_URL "$OCRPOOL" result "$pw_id" >"$TMP/pw.txt" 2>/dev/null &&
            grep -q '[A-Za-z]' "$TMP/pw.txt" && return 0
        sleep 0.5
    done
    return 1
}
check "that node runs a page submitted with the password: its text is read back" pw_done
tr '\0' ' ' <"/proc/$PWPID/cmdline" >"$TMP/pw.cmdline"
check "the master's command line holds no password" no_pw "$TMP/pw.cmdline"
"$OCRPOOL" monitor --json --node "$PWPID" >"$TMP/pw.monitor" 2>&1
check "monitor --json answers, without the password" \
    bash -c "grep -q '$PWPID' '$TMP/pw.monitor' && ! grep -qE 's3cret|%20pass' '$TMP/pw.monitor'"
"$OCRPOOL" control --node "$PWPID" stats >"$TMP/pw.stats" 2>&1
check "control stats answers, without the password" \
    bash -c "grep -q '$PWPID' '$TMP/pw.stats' && ! grep -qE 's3cret|%20pass' '$TMP/pw.stats'"
check "Celery's inspect stats, conf and report answer, without the password" \
    $PY - "$PW_URL" <<'PYEOF'
import json, sys
from celery import Celery
i = Celery(broker=sys.argv[1]).control.inspect(timeout=5)
got = {"stats": i.stats(), "conf": i.conf(), "report": i.report()}
text = json.dumps(got)
print("#", text[:200])
assert all(got.values()), got
assert "s3cret" not in text and "%20pass" not in text, text
PYEOF
check "the password-URL node stops warm" stop_node "$PWPID"
check "its log (level info) holds no password" no_pw "$TMP/pw.log"
finish
