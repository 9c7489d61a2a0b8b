#!/usr/bin/env bash
# Untrusted Celery tasks (issue 15, points 1, 2 and part of 7), on a real
# redis-server started here on a loopback port, tasks sent by Debian's Python
# Celery client: a task's language must name installed models only (at most
# max-languages), its file must resolve under the worker's --allow-root, and
# every refusal has one reason whatever the file is; a worker on Redis
# without --allow-root refuses to start; a SQLite worker honours allow-root
# when given. Both engines (tesseract, lstm) are checked.
source "$(dirname "$0")/lib.sh"
F=$FIXTURES
PY=/usr/bin/python3 # Debian's, with python3-celery
export OCRPOOL_LOG_LEVEL=info

if ! command -v redis-server >/dev/null || ! $PY -c 'import celery, redis' 2>/dev/null; then
    not_ok "redis-server and python3-celery are installed (scripts/install-deps.sh)"
    finish
fi


PORT=$(freeport)
URL="redis://127.0.0.1:$PORT/0"
mkdir -p "$TMP/redis"
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$TMP/redis" --save "" --appendonly no \
    --daemonize no >"$TMP/redis.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do redis-cli -p "$PORT" ping 2>/dev/null | grep >/dev/null PONG && break; sleep 0.1; done

start_node() { # start_node LOG [flags]: a worker node on Redis, pid in $WPID
    local log=$1
    shift
    "$OCRPOOL" worker --broker "$URL" "$@" >"$log" 2>&1 &
    WPID=$!
    PIDS+=("$WPID")
    wait_log "$log" "node .*[0-9] workers\?, prefetch" 60
}
stop_node() { kill -TERM "$1" 2>/dev/null && wait "$1"; }

# The files a task might name: one under the root, the rest what an attacker would try.
R=$TMP/root
mkdir -p "$R/sub" "$TMP/secret" "$TMP/models"
cp "$F/eng.png" "$R/ok.png"
cp "$F/eng.pdf" "$R/doc.pdf"
cp "$F/eng.png" "$R/sub/also.png"
cp "$F/eng.png" "$TMP/secret/s.png"
chmod 0600 "$TMP/secret/s.png"
chmod 0700 "$TMP/secret"
ln -s ../secret/s.png "$R/link.png"
ln -s sub/also.png "$R/inside.png"
mkfifo "$R/fifo"
# A model file outside tessdata that a language with ../ would load (the reproduction).
TESSDATA=$(dirname "$(find /usr/share/tesseract-ocr -name eng.traineddata | head -1)")
cp "$TESSDATA/eng.traineddata" "$TMP/models/evil.traineddata"
EVIL=$($PY -c "import os; print(os.path.relpath('$TMP/models/evil', '$TESSDATA'))")

# cases FILE: one task per line "name<TAB>source<TAB>lang<TAB>kwargs-json"; prints
# "name<TAB>status<TAB>failure<TAB>reason" for each once it is final (90 s at most).
run_cases() {
    $PY - "$URL" "$1" <<'PYEOF'
import json, sys, time
import redis
from celery import Celery
url, cases = sys.argv[1], sys.argv[2]
app = Celery(broker=url, backend=url)
r = redis.Redis.from_url(url)
sent = []
for line in open(cases):
    name, src, lang, kw = line.rstrip("\n").split("\t")
    args = [src] if lang == "-" else [src, lang]
    sent.append((name, app.send_task("ocrpool.ocr_page", args=args, kwargs=json.loads(kw)).id))
deadline = time.time() + 90
for name, tid in sent:
    meta = None
    while time.time() < deadline:
        raw = r.get("celery-task-meta-" + tid)
        meta = json.loads(raw) if raw else None
        if meta and meta["status"] in ("SUCCESS", "FAILURE", "REVOKED"):
            break
        time.sleep(0.1)
    status = meta["status"] if meta else "NONE"
    res = meta.get("result") if meta else None
    reason = ""
    if status == "FAILURE" and isinstance(res, dict):
        reason = (res.get("exc_message") or [""])[0]
    print("%s\t%s\t%s\t%s" % (name, status, (meta or {}).get("ocrpool_failure", "-"), reason))
PYEOF
}
# got NAME STATUS FAILURE REASON: the line of case NAME in $OUT is exactly so.
got() { grep -qxF "$1"$'\t'"$2"$'\t'"$3"$'\t'"$4" "$OUT"; }

# --- A worker on Redis needs --allow-root ------------------------------------
"$OCRPOOL" worker --broker "$URL" -c 1 >"$TMP/noroot.log" 2>&1
rc=$?
check "a worker on Redis without --allow-root refuses to start (exit 2, got $rc)" test $rc -eq 2
check "it says why and how" grep -q "a worker on Redis takes paths from other machines: give --allow-root DIR.*--allow-root / to accept any path" "$TMP/noroot.log"
"$OCRPOOL" worker --broker "$URL" -c 1 --allow-root "$TMP/nowhere" >"$TMP/noroot2.log" 2>&1
check "an --allow-root that is not a folder: refused at start" grep -q "allow-root $TMP/nowhere (from flag --allow-root) is not a folder" "$TMP/noroot2.log"

W=$(vipsheader -f width "$R/ok.png")
H=$(vipsheader -f height "$R/ok.png")

for engine in tesseract lstm; do
    # --- Paths: only files under the root, one reason for every refusal ------
    start_node "$TMP/$engine.log" -c 1 --engine "$engine" --allow-root "$R"
    check "$engine: a worker on Redis with --allow-root starts" kill -0 "$WPID"
    {
        printf 'ok\t%s\teng\t{}\n' "$R/ok.png"
        printf 'inside\t%s\teng\t{}\n' "$R/inside.png"
        printf 'dotdot-in\t%s\teng\t{}\n' "$R/sub/../ok.png"
        printf 'secret\t%s\teng\t{}\n' "$TMP/secret/s.png"
        printf 'link\t%s\teng\t{}\n' "$R/link.png"
        printf 'dotdot\t%s\teng\t{}\n' "$R/../secret/s.png"
        printf 'missing\t%s\teng\t{}\n' "$R/missing.png"
        printf 'nodir\t%s\teng\t{}\n' "$R/nodir/x.png"
        printf 'folder\t%s\teng\t{}\n' "$R/sub"
        printf 'fifo\t%s\teng\t{}\n' "$R/fifo"
        printf 'passwd\t%s\teng\t{}\n' /etc/passwd
        printf 'relative\t%s\teng\t{}\n' ok.png
        # --- Languages: installed models only, at most max-languages ----------
        printf 'evil-lang\t%s\t%s\t{}\n' "$R/ok.png" "$EVIL"
        printf 'passwd-lang\t%s\t%s\t{}\n' "$R/ok.png" ../../../../etc/passwd
        printf 'nofile-lang\t%s\t%s\t{}\n' "$R/ok.png" ../../../../no/such/file
        printf 'abs-lang\t%s\t%s\t{}\n' "$R/ok.png" "$TMP/models/evil"
        printf 'kat\t%s\tkat\t{}\n' "$R/ok.png"
        # Installed models all (osd: tesseract-ocr-osd), one too many for max-languages 4;
        # those no other case names first, so that a model read for them shows in the log.
        printf 'six\t%s\tscript/Devanagari+osd+eng+san+hin+tam\t{}\n' "$R/ok.png"
        printf 'five\t%s\tosd+eng+san+hin+tam\t{}\n' "$R/ok.png"
        printf 'four\t%s\teng+san+hin+tam\t{}\n' "$R/ok.png"
        printf 'twice\t%s\teng+eng\t{}\n' "$R/ok.png"
        printf 'hin\t%s\thin\t{}\n' "$R/ok.png"
        printf 'kw-lang\t%s\t-\t{"lang": "../../../../etc/passwd"}\n' "$R/ok.png"
        # --- Point 7: a task may not ask for an unresized page -----------------
        printf 'size0\t%s\teng\t{"max_image_size": 0}\n' "$R/ok.png"
        printf 'size-small\t%s\teng\t{"max_image_size": 1000}\n' "$R/ok.png"
        printf 'formats-twice\t%s\teng\t{"formats": ["txt", "txt"]}\n' "$R/ok.png"
        # A false width/height would slip a big page past --memory-budget.
        printf 'liar\t%s\teng\t{"width": 10, "height": 10}\n' "$R/ok.png"
        printf 'honest\t%s\teng\t{"width": %s, "height": %s}\n' "$R/ok.png" "$W" "$H"
        # A PDF page too, at the node's pdf-dpi.
        printf 'pdf-liar\t%s\teng\t{"width": 10, "height": 10}\n' "$R/doc.pdf"
    } >"$TMP/cases"
    OUT=$TMP/$engine.out
    run_cases "$TMP/cases" >"$OUT"
    sed 's/^/# /' "$OUT"
    for c in ok inside dotdot-in hin four size-small; do
        check "$engine: $c: done" got "$c" SUCCESS - ""
    done
    for c in secret link dotdot missing nodir folder fifo passwd relative; do
        check "$engine: $c: fails (input) with the one reason 'path not allowed'" \
            got "$c" FAILURE input "path not allowed"
    done
    for c in evil-lang passwd-lang nofile-lang abs-lang kat six five twice kw-lang; do
        check "$engine: lang $c: fails (input) with the one reason 'invalid language'" \
            got "$c" FAILURE input "invalid language"
    done
    check "$engine: max_image_size 0 is refused" grep -q $'^size0\tFAILURE\tmalformed\tmax_image_size' "$OUT"
    check "$engine: a page larger than its task declared fails (input), before decoding" \
        grep -q $'^liar\tFAILURE\tinput\tpage is '"$W x $H"', larger than the 10 x 10 its task declared' "$OUT"
    check "$engine: a page of its declared size is done" got honest SUCCESS - ""
    check "$engine: a PDF page larger than its task declared fails (input)" \
        grep -q $'^pdf-liar\tFAILURE\tinput\tpage is .* larger than the 10 x 10 its task declared' "$OUT"
    check "$engine: formats twice is refused" grep -q $'^formats-twice\tFAILURE\tmalformed\tformats:' "$OUT"
    check "$engine: no model outside tessdata was loaded" bash -c "! grep -q 'evil' '$TMP/$engine.log'"
    check "$engine: no model was loaded for a refused language" \
        bash -c "! grep -E 'load(ed|ing)' '$TMP/$engine.log' | grep -Eq 'kat|passwd|osd|Devanagari|Tamil|evil'"
    check "$engine: refused pages were not retried" bash -c "! grep -q 'goes back to the queue' '$TMP/$engine.log'"
    check "$engine: nothing is left unacknowledged" test "$(redis-cli -p "$PORT" hlen unacked)" -eq 0
    check "$engine: the worker survived" kill -0 "$WPID"
    check "$engine: warm stop exits 0" stop_node "$WPID"
done

# --- A task without a size counts as the largest page the limits allow --------
# (the null engine reads no pixels: only the master's estimate decides here).
start_node "$TMP/budget.log" -c 1 --engine null --allow-root "$R" --memory-budget 100 \
    --max-image-size 0
{
    printf 'nosize\t%s\teng\t{}\n' "$R/ok.png"
    printf 'sized\t%s\teng\t{"width": 100, "height": 100}\n' "$R/ok.png"
} >"$TMP/cases"
OUT=$TMP/budget.out
run_cases "$TMP/cases" >"$OUT"
sed 's/^/# /' "$OUT"
check "memory-budget: a task without width/height is estimated at max-pixels, not 0" \
    grep -q $'^nosize\tFAILURE\tmemory_budget\tpage needs about' "$OUT"
check "memory-budget: a task with a small size fits" got sized SUCCESS - ""
check "budget node: warm stop exits 0" stop_node "$WPID"

# --- serve's workers: the spool, and a task's path only under --allow-root ------
for roots in none root; do
    HP=$(freeport)
    flags=()
    [ $roots = root ] && flags=(--allow-root "$R")
    "$OCRPOOL" serve --listen "127.0.0.1:$HP" --broker "$URL" -c 1 --spool-dir "$TMP/spool-$roots" \
        "${flags[@]}" >"$TMP/serve-$roots.log" 2>&1 &
    WPID=$!
    PIDS+=("$WPID")
    wait_log "$TMP/serve-$roots.log" "node .*[0-9] workers\?, prefetch" 60
    for _ in $(seq 50); do curl -s "http://127.0.0.1:$HP/healthz" >/dev/null && break; sleep 0.1; done
    {
        printf 'ok\t%s\teng\t{}\n' "$R/ok.png"
        printf 'secret\t%s\teng\t{}\n' "$TMP/secret/s.png"
    } >"$TMP/cases"
    OUT=$TMP/serve-$roots.out
    run_cases "$TMP/cases" >"$OUT"
    sed 's/^/# /' "$OUT"
    if [ $roots = root ]; then
        check "serve --allow-root: a Celery task's file under it is done" got ok SUCCESS - ""
    else
        check "serve without --allow-root: a Celery task's path fails (input), path not allowed" \
            got ok FAILURE input "path not allowed"
    fi
    check "serve ($roots): a Celery task's file outside fails (input), path not allowed" \
        got secret FAILURE input "path not allowed"
    code=$(curl -s -o "$TMP/up-$roots.json" -w '%{http_code}' -F "file=@$F/eng.png" \
        "http://127.0.0.1:$HP/v1/ocr?lang=eng")
    check "serve ($roots): an upload is read from the spool (200, got $code)" test "$code" = 200
    code=$(curl -s -o /dev/null -w '%{http_code}' -F "file=@$F/eng.png" \
        "http://127.0.0.1:$HP/v1/ocr?lang=eng+san+hin+tam+osd")
    check "serve ($roots): five languages over HTTP: 400 (got $code)" test "$code" = 400
    code=$(curl -s -o /dev/null -w '%{http_code}' -F "file=@$F/eng.png" \
        "http://127.0.0.1:$HP/v1/ocr?lang=kat")
    check "serve ($roots): a language not installed over HTTP: 400 (got $code)" test "$code" = 400
    check "serve ($roots): warm stop exits 0" stop_node "$WPID"
done

# --- --allow-root / accepts any path -------------------------------------------
start_node "$TMP/slash.log" -c 1 --allow-root /
printf 'outside\t%s\teng\t{}\n' "$TMP/secret/s.png" >"$TMP/cases"
OUT=$TMP/slash.out
run_cases "$TMP/cases" >"$OUT"
check "--allow-root /: any path is read" got outside SUCCESS - ""
check "--allow-root / node: warm stop exits 0" stop_node "$WPID"

# --- SQLite: no allow-root needed; honoured when given (config file) ---------
finished() { # finished QUEUE N OUT: until N pages of group g have finished (60 s at most);
    local _ #  the group's status JSON in OUT
    for _ in $(seq 300); do
        "$OCRPOOL" status --broker "$1" --json g >"$3" 2>/dev/null
        $PY -c "import json,sys; d=json.load(open('$3')); sys.exit(0 if d['done'] + d['failed'] == $2 else 1)" 2>/dev/null && return
        sleep 0.2
    done
}
Q="sqlite://$TMP/q.db"
printf 'allow-root = %s\n' "$R" >"$TMP/w.ini"
"$OCRPOOL" submit --broker "$Q" --group g "$R/ok.png" "$TMP/secret/s.png" >"$TMP/ids" 2>&1
"$OCRPOOL" worker --broker "$Q" -c 1 --config "$TMP/w.ini" >"$TMP/sq.log" 2>&1 &
WPID=$!
PIDS+=("$WPID")
finished "$Q" 2 "$TMP/st.json"
check "sqlite + allow-root from a config file: the file under the root is done, the other fails" \
    $PY -c "import json; d=json.load(open('$TMP/st.json')); f=d['failures']; assert d['done'] == 1 and len(f) == 1 and f[0]['reason'] == 'path not allowed' and f[0]['failure'] == 'input', d"
check "sqlite worker: warm stop exits 0" stop_node "$WPID"
"$OCRPOOL" submit --broker "sqlite://$TMP/q2.db" --group g "$TMP/secret/s.png" >/dev/null 2>&1
"$OCRPOOL" worker --broker "sqlite://$TMP/q2.db" -c 1 >"$TMP/sq2.log" 2>&1 &
WPID=$!
PIDS+=("$WPID")
finished "sqlite://$TMP/q2.db" 1 "$TMP/st2.json"
check "sqlite without allow-root: a local worker still reads any path" \
    $PY -c "import json; d=json.load(open('$TMP/st2.json')); assert d['done'] == 1, d"
check "sqlite worker without allow-root: warm stop exits 0" stop_node "$WPID"
finish
