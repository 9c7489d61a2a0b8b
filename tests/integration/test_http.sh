#!/usr/bin/env bash
# `ocrpool serve`: every endpoint over real HTTP (Python's urllib as the
# client), bad requests, the token, the body cap, --allow-root; the
# connection cap; and the dashboard in headless Chromium until its chart has
# drawn points, with a screenshot kept in the test logs.
source "$(dirname "$0")/lib.sh"
export XDG_RUNTIME_DIR=$TMP/run
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$OCRPOOL" serve --listen "127.0.0.1:$port" --broker "sqlite://$TMP/q.db" -c 2 --token s3cret \
    --allow-root "$FIXTURES" --max-body 2 >"$TMP/serve.log" 2>&1 &
S=$!
for _ in $(seq 1 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=1)" 2>/dev/null && break
    sleep 0.1
done
python3 "$here/http_check.py" "http://127.0.0.1:$port" s3cret "$FIXTURES" || _failed=1

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

# Results expire, and with them the uploads kept for the workers.
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

check "an upload is kept while its page lives" test "$(ls "$TMP/spool2" | wc -l)" -eq 1
for _ in $(seq 1 100); do [ "$(ls "$TMP/spool2" | wc -l)" -eq 0 ] && break; sleep 0.1; done
check "result-expires: the page is gone (404)" python3 -c "
import urllib.request, urllib.error
try:
    urllib.request.urlopen('http://127.0.0.1:$port/v1/jobs/$id', timeout=5); raise SystemExit(1)
except urllib.error.HTTPError as e:
    raise SystemExit(0 if e.code == 404 else 1)"
check "result-expires: its upload is deleted" test "$(ls "$TMP/spool2" | wc -l)" -eq 0
kill -TERM "$E"
wait "$E"

# API only: --no-workers answers on a queue that other nodes work.
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
finish
