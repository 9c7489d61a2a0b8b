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
kill -TERM "$A"
wait "$A"
finish
