#!/usr/bin/env bash
# `ocrpool serve`: every endpoint over real HTTP (Python's urllib as the
# client), bad requests (bytes that are not UTF-8, stalled clients), the
# token (from the environment and from a file, never on the command line),
# the body cap, --allow-root; the connection cap; the API process restarted
# by its node after kill -9; uploads deleted once their pages finish, on
# SQLite and on a real redis-server; and the dashboard in headless Chromium
# until its chart has drawn points, with a screenshot kept in the test logs.
source "$(dirname "$0")/lib.sh"
export XDG_RUNTIME_DIR=$TMP/run
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
port=$(freeport)
up() { # up URL: until it answers (10 s at most)
    for _ in $(seq 1 100); do
        python3 -c "import urllib.request; urllib.request.urlopen('$1', timeout=1)" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
# get URL [TOKEN]: the body of a GET, or nothing.
get() { python3 -c "
import sys, urllib.request
h = {'Authorization': 'Bearer ' + sys.argv[2]} if len(sys.argv) > 2 else {}
sys.stdout.write(urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers=h), timeout=10).read().decode())" "$@" 2>/dev/null; }

# The token from the environment: not on the command line, where ps shows it.
OCRPOOL_TOKEN=s3cret "$OCRPOOL" serve --listen "127.0.0.1:$port" --broker "sqlite://$TMP/q.db" -c 2 \
    --allow-root "$FIXTURES" --max-body 2 --connection-timeout 2 >"$TMP/serve.log" 2>&1 &
S=$!
PIDS+=("$S")
up "http://127.0.0.1:$port/healthz"
python3 "$here/http_check.py" "http://127.0.0.1:$port" s3cret "$FIXTURES" "$TMP/spool" || _failed=1
check "OCRPOOL_TOKEN: the token is not in the command line" bash -c "! tr '\\0' ' ' </proc/$S/cmdline | grep >/dev/null s3cret"

# The node restarts its API process: kill -9 it, and the API answers again within a few
# seconds, /metrics counts the restart, and the log says how it ended.
api=$(get "http://127.0.0.1:$port/v1/stats" s3cret | python3 -c "import json, sys; print(json.load(sys.stdin)['sidecar']['pid'])")
check "/v1/stats: the API process's pid (${api:-none})" test "${api:-0}" -gt 0
[ "${api:-0}" -gt 0 ] && kill -9 "$api"
t0=$(date +%s.%N)
sleep 0.2
check "API killed (kill -9): it answers again within 5 s" up "http://127.0.0.1:$port/healthz"
echo "# back after $(python3 -c "import time; print(round(time.time() - $t0, 1))") s"
restarts=""
for _ in $(seq 1 50); do
    restarts=$(get "http://127.0.0.1:$port/metrics" s3cret | sed -n 's/^ocrpool_http_restarts_total //p')
    [ -n "$restarts" ] && break
    sleep 0.1
done
check "/metrics: ocrpool_http_restarts_total 1 (${restarts:-none})" test "$restarts" = 1
check "the node logged the restart with the signal" grep -q "HTTP API $api was killed by signal 9 (SIGKILL).*restarting it in 1 s" "$TMP/serve.log"
api2=$(get "http://127.0.0.1:$port/v1/stats" s3cret | python3 -c "import json, sys; print(json.load(sys.stdin)['sidecar']['pid'])")
check "a new API process ($api2), and it OCRs" python3 -c "
import json, urllib.request
r = urllib.request.Request('http://127.0.0.1:$port/v1/ocr', data=open('$FIXTURES/eng.png', 'rb').read(),
                           method='POST', headers={'Authorization': 'Bearer s3cret'})
assert 'quick brown fox' in json.load(urllib.request.urlopen(r, timeout=60))['text']"

# A second death soon after (within the minute that resets it): the delay has doubled
# (2 s), the restart waits it out, and /metrics counts 2.
[ "${api2:-0}" -gt 0 ] && kill -9 "$api2"
t0=$(date +%s.%N)
sleep 0.2
check "API killed again: it answers again within 10 s" up "http://127.0.0.1:$port/healthz"
back=$(python3 -c "import time; print(round(time.time() - $t0, 1))")
check "the second restart waited the doubled delay (back after $back s, 2 s due)" \
    python3 -c "import sys; sys.exit(0 if $back >= 1.8 else 1)"
check "the node logged the second restart: restarting it in 2 s" \
    grep -q "HTTP API $api2 was killed by signal 9 (SIGKILL).*restarting it in 2 s" "$TMP/serve.log"
restarts=""
for _ in $(seq 1 50); do
    restarts=$(get "http://127.0.0.1:$port/metrics" s3cret | sed -n 's/^ocrpool_http_restarts_total //p')
    [ "$restarts" = 2 ] && break
    sleep 0.1
done
check "/metrics: ocrpool_http_restarts_total 2 (${restarts:-none})" test "$restarts" = 2
api3=$(get "http://127.0.0.1:$port/v1/stats" s3cret | python3 -c "import json, sys; print(json.load(sys.stdin)['sidecar']['pid'])")
check "a third API process ($api3)" bash -c "[ '${api3:-0}' -gt 0 ] && [ '${api3:-0}' != '$api2' ]"
api2=$api3 # the API process now, which must end with its node

# A group name of any length (here 200 bytes) is a group, not a 404.
long=$(printf 'g%.0s' $(seq 1 200))
"$OCRPOOL" submit --broker "sqlite://$TMP/q.db" --group "$long" "$FIXTURES/eng.png" >/dev/null
check "GET /v1/groups/<200 bytes>: 200" python3 -c "
import json, urllib.request
r = urllib.request.Request('http://127.0.0.1:$port/v1/groups/$long', headers={'Authorization': 'Bearer s3cret'})
d = json.load(urllib.request.urlopen(r, timeout=10)); assert d['group'] == '$long' and d['total'] == 1, d"
check "GET /v1/jobs/<100 bytes>: still 404" python3 -c "
import urllib.request, urllib.error
r = urllib.request.Request('http://127.0.0.1:$port/v1/jobs/' + 'x' * 100, headers={'Authorization': 'Bearer s3cret'})
try:
    urllib.request.urlopen(r, timeout=10); raise SystemExit(1)
except urllib.error.HTTPError as e:
    raise SystemExit(0 if e.code == 404 else 1)"

# The dashboard in a real browser: wait until the chart has drawn points.
if command -v chromium >/dev/null; then
    shots=${OCP_TEST_OUT:-$TMP}
    url="http://127.0.0.1:$port/#token=s3cret"
    flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
        --disable-background-networking --disable-component-update --disable-sync
        --user-data-dir="$TMP/chrome" --window-size=1100,900 --virtual-time-budget=7000)
    timeout 60 chromium "${flags[@]}" --dump-dom "$url" >"$TMP/dom.html" 2>/dev/null
    pts=$(sed -n 's/.*data-points="\([0-9]*\)".*/\1/p' "$TMP/dom.html" | head -1)
    check "dashboard: the chart has drawn data points (${pts:-none})" test "${pts:-0}" -gt 0
    check "dashboard: the workers table is filled" grep -q '<td>busy</td>\|<td>idle</td>' "$TMP/dom.html"
    timeout 60 chromium "${flags[@]}" --screenshot="$shots/dashboard.png" "$url" >/dev/null 2>&1
    check "dashboard: screenshot saved" test -s "$shots/dashboard.png"
    echo "# screenshot: $shots/dashboard.png"
else
    not_ok "chromium is not installed (scripts/install-deps.sh installs it)"
fi

kill -TERM "$S"
wait "$S"
rc=$?
check "serve: stops on SIGTERM (exit $rc)" test $rc -eq 0
check "serve: the API process is gone too" bash -c "! python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=1)\" 2>/dev/null"
check "serve: the restarted API process ($api2) ended with its node" bash -c "! kill -0 ${api2:-0} 2>/dev/null"

# Results expire (the upload went when its page was done).
port=$(freeport) # a new one each time: a port left free is anybody's
"$OCRPOOL" serve --listen "127.0.0.1:$port" --broker "sqlite://$TMP/qe.db" --spool-dir "$TMP/spool2" \
    -c 1 --result-expires 1 >"$TMP/exp.log" 2>&1 &
E=$!
for _ in $(seq 1 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/readyz', timeout=1)" 2>/dev/null && break
    sleep 0.1
done
id=$(python3 -c "
import json, urllib.request
r = urllib.request.Request('http://127.0.0.1:$port/v1/ocr', data=open('$FIXTURES/eng.png', 'rb').read(), method='POST')
d = json.load(urllib.request.urlopen(r, timeout=60)); print(d['id'])")

check "result-expires: the page is gone (404) within 10 s" python3 -c "
import time, urllib.request, urllib.error
for _ in range(100):
    try:
        urllib.request.urlopen('http://127.0.0.1:$port/v1/jobs/$id', timeout=5)
    except urllib.error.HTTPError as e:
        raise SystemExit(0 if e.code == 404 else 1)
    time.sleep(0.1)
raise SystemExit(1)"
# The API's sweep looks every 2 s: the upload goes within one look of its page's end.
for _ in $(seq 1 50); do [ "$(ls "$TMP/spool2" | wc -l)" -eq 0 ] && break; sleep 0.1; done
check "result-expires: its upload is deleted (within a sweep of its page's end)" \
    test "$(ls "$TMP/spool2" | wc -l)" -eq 0
kill -TERM "$E"
wait "$E"

# API only: --no-workers answers on a queue that other nodes work.
port=$(freeport) # a new one each time: a port left free is anybody's
"$OCRPOOL" serve --no-workers --listen "127.0.0.1:$port" --broker "sqlite://$TMP/q.db" >"$TMP/api.log" 2>&1 &
A=$!
for _ in $(seq 1 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=1)" 2>/dev/null && break
    sleep 0.1
done
check "--no-workers: /readyz without a token configured" \
    python3 -c "import urllib.request,json; assert json.load(urllib.request.urlopen('http://127.0.0.1:$port/readyz'))['ready']"
# A page DONE without its result (a Redis result that expired): 502, and the API lives on.
check "a DONE page without a result: 502, the API still answers" \
    python3 - "http://127.0.0.1:$port" "$TMP/q.db" "$FIXTURES/eng.png" <<'PY'
import sqlite3, sys, threading, time, urllib.error, urllib.request
base, db, png = sys.argv[1:4]
def lose_result():  # the page this request queues: DONE, with no result
    con = sqlite3.connect(db, timeout=10)
    for _ in range(400):
        n = con.execute("UPDATE tasks SET state = 2, result = NULL, finished = ? "
                        "WHERE grp LIKE 'now-%' AND state = 0", (time.time(),)).rowcount
        con.commit()
        if n:
            return
        time.sleep(0.05)
threading.Thread(target=lose_result, daemon=True).start()
r = urllib.request.Request(base + "/v1/ocr", data=open(png, "rb").read(), method="POST")
try:
    urllib.request.urlopen(r, timeout=60)
    code, body = 200, b""
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
print("# %d %s" % (code, body[:80]))
assert code == 502 and b"result missing" in body, code
assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
PY
kill -TERM "$A"
wait "$A"

# --token-file: the token from a file (its first line), not on the command line.
printf 'fil3tok\n' >"$TMP/token"
port=$(freeport) # a new one each time: a port left free is anybody's
"$OCRPOOL" serve --no-workers --listen "127.0.0.1:$port" --broker "sqlite://$TMP/q.db" \
    --token-file "$TMP/token" >"$TMP/tf.log" 2>&1 &
T=$!
PIDS+=("$T")
up "http://127.0.0.1:$port/healthz"
check "--token-file: no token: 401" python3 -c "
import urllib.error, urllib.request
try:
    urllib.request.urlopen('http://127.0.0.1:$port/readyz', timeout=5); raise SystemExit(1)
except urllib.error.HTTPError as e:
    raise SystemExit(0 if e.code == 401 else 1)"
check "--token-file: the file's token: 200" python3 -c "
import urllib.request
r = urllib.request.Request('http://127.0.0.1:$port/readyz', headers={'Authorization': 'Bearer fil3tok'})
assert urllib.request.urlopen(r, timeout=5).status == 200"
check "--token-file: the token is not in the command line" bash -c "! tr '\\0' ' ' </proc/$T/cmdline | grep >/dev/null fil3tok"
kill -TERM "$T"
wait "$T"
check "--token-file of a file that is not there: a clear error" bash -c \
    "'$OCRPOOL' serve --no-workers --token-file '$TMP/none' 2>&1 | grep >/dev/null -- '--token-file $TMP/none: No such file'"
check "--serve --help names --token-file and OCRPOOL_TOKEN" bash -c \
    "'$OCRPOOL' serve --help | grep >/dev/null -- '--token-file FILE' && '$OCRPOOL' serve --help | grep >/dev/null OCRPOOL_TOKEN"

# Uploads (SQLite): kept while their pages wait, deleted once they have finished; one
# that queued nothing is deleted at once.
SP=$TMP/spool3
port=$(freeport) # a new one each time: a port left free is anybody's
"$OCRPOOL" serve --no-workers --listen "127.0.0.1:$port" --broker "sqlite://$TMP/qs.db" \
    --spool-dir "$SP" >"$TMP/sp.log" 2>&1 &
A=$!
PIDS+=("$A")
up "http://127.0.0.1:$port/healthz"
# post PATH FILE [CT]: POST FILE raw (or multipart with CT=multipart); prints the status.
post() { python3 - "http://127.0.0.1:$port$1" "$2" "${3:-raw}" <<'PY'
import sys, urllib.error, urllib.request
url, path, how = sys.argv[1:4]
data, h = open(path, "rb").read(), {"Content-Type": "application/octet-stream"}
if how == "multipart":
    b = b"----spooltest"
    data = (b"--" + b + b'\r\nContent-Disposition: form-data; name="file"; filename="doc.tif"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--" + b + b"--\r\n")
    h = {"Content-Type": "multipart/form-data; boundary=" + b.decode()}
try:
    print(urllib.request.urlopen(urllib.request.Request(url, data=data, headers=h, method="POST"), timeout=60).status)
except urllib.error.HTTPError as e:
    print(e.code)
PY
}
check "POST /v1/jobs (2 pages): 202" test "$(post /v1/jobs "$FIXTURES/two.tif" multipart)" = 202
sleep 3 # more than a sweep
check "its upload is kept while its pages wait ($(ls "$SP" | tr '\n' ' '))" test "$(ls "$SP" | wc -l)" -eq 2
echo "not an image" >"$TMP/text.txt"
check "POST /v1/jobs of a file that is not an image: 422" test "$(post /v1/jobs "$TMP/text.txt" multipart)" = 422
check "POST /v1/ocr of 2 pages: 422" test "$(post /v1/ocr "$FIXTURES/two.tif")" = 422
check "uploads that queued nothing are deleted at once" test "$(ls "$SP" | wc -l)" -eq 2
"$OCRPOOL" worker --broker "sqlite://$TMP/qs.db" -c 1 >"$TMP/spw.log" 2>&1 &
W=$!
PIDS+=("$W")
for _ in $(seq 1 300); do [ "$(ls "$SP" | wc -l)" -eq 0 ] && break; sleep 0.1; done
check "SQLite: the upload is deleted once its pages have finished" test "$(ls "$SP" | wc -l)" -eq 0
kill -TERM "$W" "$A"
wait "$W" "$A"

# A port that is taken: the API cannot start, and serve says so and ends with an error
# (its node ran on without an API before).
port=$(freeport)
python3 -c "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', $port)); s.listen(); time.sleep(90)" &
H=$!
PIDS+=("$H")
sleep 0.5
timeout 60 "$OCRPOOL" serve --listen "127.0.0.1:$port" --broker "sqlite://$TMP/qp.db" -c 1 >"$TMP/port.log" 2>&1
rc=$?
check "serve on a port that is taken: ends with an error (exit $rc)" test $rc -eq 1
check "serve on a port that is taken: says why" grep -q "cannot listen on 127.0.0.1:$port" "$TMP/port.log"
check "serve on a port that is taken: the API is not restarted" bash -c "! grep -q 'restarting it' '$TMP/port.log'"
kill "$H"
wait "$H" 2>/dev/null

# The same on a real redis-server (started here on a loopback port): a bad filename is
# a 400 (it crashed the API process), and an upload goes once its page is done.
if command -v redis-server >/dev/null; then
    RPORT=$(freeport)
    mkdir -p "$TMP/redis"
    redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$TMP/redis" --save "" --appendonly no \
        --daemonize no >"$TMP/redis.log" 2>&1 &
    R=$!
    PIDS+=("$R")
    for _ in $(seq 100); do redis-cli -p "$RPORT" ping 2>/dev/null | grep >/dev/null PONG && break; sleep 0.1; done
    RSP=$TMP/rspool
    port=$(freeport)
    # No --allow-root: its workers read the uploads in the spool, nothing else.
    "$OCRPOOL" serve --listen "127.0.0.1:$port" --broker "redis://127.0.0.1:$RPORT/0" -c 1 \
        --spool-dir "$RSP" >"$TMP/rserve.log" 2>&1 &
    RS=$!
    PIDS+=("$RS")
    up "http://127.0.0.1:$port/healthz"
    check "Redis: a filename that is not UTF-8: 400, and the API process lives" python3 -c "
import urllib.error, urllib.request
b = b'----x'
body = (b'--' + b + b'\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\xff\xfe.png\"\r\n\r\n' +
        open('$FIXTURES/eng.png', 'rb').read() + b'\r\n--' + b + b'--\r\n')
r = urllib.request.Request('http://127.0.0.1:$port/v1/ocr', data=body, method='POST',
                           headers={'Content-Type': 'multipart/form-data; boundary=' + b.decode()})
try:
    urllib.request.urlopen(r, timeout=20); raise SystemExit(1)
except urllib.error.HTTPError as e:
    assert e.code == 400, e.code
assert urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=5).status == 200"
    check "Redis: the API process was not restarted" bash -c "! grep -q 'HTTP API .* restarting' '$TMP/rserve.log'"
    check "Redis: POST /v1/ocr: 200" test "$(post /v1/ocr "$FIXTURES/eng.png")" = 200
    for _ in $(seq 1 100); do [ "$(ls "$RSP" | wc -l)" -eq 0 ] && break; sleep 0.1; done
    check "Redis: the upload is deleted once its page is done" test "$(ls "$RSP" | wc -l)" -eq 0
    kill -TERM "$RS"
    wait "$RS"
    kill -TERM "$R"
    wait "$R"
else
    not_ok "redis-server is installed (scripts/install-deps.sh)"
fi
finish
