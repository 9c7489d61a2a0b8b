#!/usr/bin/env bash
# The shared recognizer (issue 16; README "Shared recognizer"), on the CPU:
#  1. `recognizer = shared` gives exactly the text (and TSV: boxes, confidences) of
#     `recognizer = worker`, on the test pages of every installed test language, and with
#     several languages per page; the recognizer read the lines (its own count), and no
#     line was left to a worker;
#  2. its lines are batched across workers: at -c 4 the histogram has batches of more than
#     one line and batches holding lines of more than one worker;
#  3. kill -9 of the recognizer mid-run: no page lost, none done twice (one delivery each),
#     every text right, and the recognizer is back (restarted by the master);
#  4. a worker killed mid-batch (lines waiting in the recognizer): only its page is
#     delivered again; the recognizer goes on (same pid) and every text is right;
#  5. a recognizer that cannot start (a model that does not load, by fault injection) and
#     one that keeps dying: the node falls back to reading in the workers, says so, counts
#     it, and the text is still the workers' text.
source "$(dirname "$0")/lib.sh"
F=$FIXTURES
TD=${TESSDATA_PREFIX:-/usr/share/tesseract-ocr/5/tessdata}
export OMP_THREAD_LIMIT=1
langs=()
for l in eng san tam hin; do
    [ -f "$TD/$l.traineddata" ] && langs+=("$l")
done
if [ ${#langs[@]} -eq 0 ]; then
    skip "no test language installed in $TD"
    finish
fi
echo "# languages: ${langs[*]}"

ocr() { "$OCRPOOL" ocr --engine lstm --format txt,tsv "$@"; }
# same_dirs A B: the same files with the same bytes (the queues aside).
same_dirs() { diff -r -x '.ocrpool-queue.db*' "$1" "$2" >"$TMP/diff.txt"; }
# read_by_recognizer LOG: the lines the recognizer said it read when it ended (0 if none).
read_by_recognizer() { grep -o 'recognizer 0 ends: [0-9]* lines' "$1" | awk '{s += $4} END {print s + 0}'; }

# --- 1. The same text, per language and with several per page -------------------------
for l in "${langs[@]}"; do
    in=("$F/$l.png" "$F/$l.rgb.png" "$F/$l.pdf")
    ocr -l "$l" -j 2 -o "$TMP/w-$l" "${in[@]}" 2>"$TMP/w-$l.log"
    ocr -l "$l" -j 2 --recognizer shared --log-level info -o "$TMP/s-$l" "${in[@]}" 2>"$TMP/s-$l.log"
    n=$(read_by_recognizer "$TMP/s-$l.log")
    same=0
    same_dirs "$TMP/w-$l" "$TMP/s-$l" && [ "$n" -gt 0 ] && ! grep -q 'read in this worker' "$TMP/s-$l.log" && same=1
    check "$l: shared gives the workers' text and TSV on $(ls "$TMP/w-$l" | wc -l) files ($n lines read by the recognizer)" \
        test $same = 1
done
pngs=()
for l in "${langs[@]}"; do pngs+=("$F/$l.png"); done
multi=("san+eng" "hin+tam+eng")
for ml in "${multi[@]}"; do
    ok_all=1
    for x in ${ml//+/ }; do [ -f "$TD/$x.traineddata" ] || ok_all=0; done
    [ $ok_all = 1 ] || { skip "$ml (not all installed)"; continue; }
    ocr -l "$ml" -j 2 -o "$TMP/wm-$ml" "${pngs[@]}" 2>/dev/null
    ocr -l "$ml" -j 2 --recognizer shared --log-level info -o "$TMP/sm-$ml" "${pngs[@]}" 2>"$TMP/sm.log"
    n=$(read_by_recognizer "$TMP/sm.log")
    check "-l $ml on every test page: shared gives the workers' text and TSV ($n lines read by the recognizer)" \
        bash -c "diff -r -x '.ocrpool-queue.db*' '$TMP/wm-$ml' '$TMP/sm-$ml' >/dev/null && [ $n -gt 0 ]"
done

# --- A node on a queue, for 2 to 5 ------------------------------------------------------
n=0
fresh() { n=$((n + 1)); Q="sqlite://$TMP/q$n.db"; }
start_worker() { # start_worker LOG [flags]
    local log=$1
    shift
    "$OCRPOOL" worker --broker "$Q" --engine lstm -l "$ML" "$@" >"$log" 2>&1 &
    WPID=$!
    PIDS+=("$WPID")
}
stop_worker() { kill -TERM "$WPID" 2>/dev/null; wait "$WPID"; }
wait_finished() { # wait_finished COUNT [SECONDS]
    local want=$1 limit=${2:-120} t=0
    while [ $t -lt $((limit * 10)) ]; do
        "$OCRPOOL" status --broker "$Q" --json 2>/dev/null |
            python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if d['done']+d['failed']+d['buried'] >= $want else 1)" &&
            return 0
        sleep 0.1
        t=$((t + 1))
    done
    echo "# timed out waiting for $want finished pages"
    return 1
}
# rec FIELD: a figure of recognizer 0 of node $WPID (monitor --json), or the node's
# recognizer object's field with "node." (empty when missing).
rec() {
    "$OCRPOOL" monitor --json --node "$WPID" 2>/dev/null | python3 -c "
import json, sys
try:
    d = json.load(sys.stdin)['nodes'][0]['recognizer']
except (ValueError, IndexError, KeyError):
    sys.exit(0)  # the node is not up (yet)
f = sys.argv[1]
if f.startswith('node.'):
    v = d.get(f[5:])
else:
    r = d['recognizers'][0] if d['recognizers'] else {}
    v = r.get(f)
print(json.dumps(v) if isinstance(v, (list, dict, bool)) else ('' if v is None else v))" "$1"
}
wait_rec() { # wait_rec FIELD PYTHON-CONDITION-ON-v [SECONDS]
    local t=0 v
    while [ $t -lt $((${3:-30} * 10)) ]; do
        v=$(rec "$1")
        [ -n "$v" ] && python3 -c "
import sys, json
try:
    v = json.loads(sys.argv[1])
except ValueError:
    v = sys.argv[1]
sys.exit(0 if ($2) else 1)" "$v" 2>/dev/null && return 0
        sleep 0.1
        t=$((t + 1))
    done
    return 1
}
# The reference text of each test page with $ML, read in the workers.
ML=${langs[0]}
[ -f "$TD/san.traineddata" ] && [ -f "$TD/eng.traineddata" ] && ML=san+eng
ocr -l "$ML" -j 2 -o "$TMP/ref" "${pngs[@]}" 2>/dev/null
# copies N: N copies of each test page under new names in $TMP/p$N (new task ids).
copies() {
    mkdir -p "$TMP/p$1"
    for i in $(seq 1 "$1"); do for p in "${pngs[@]}"; do
        b=$(basename "$p" .png)
        cp "$p" "$TMP/p$1/$b-$i.png"
    done; done
}
# texts_right: every task of $Q done once (deliveries given), its text the reference's.
texts_right() { # texts_right MAX_DELIVERIES_OF_ANY [PAGES_ALLOWED_MORE]
    "$OCRPOOL" status --broker "$Q" --json --tasks >"$TMP/st.json"
    python3 - "$TMP/st.json" "$TMP/ref" "$OCRPOOL" "$Q" "$1" "${2:-0}" <<'PY'
import json, os, subprocess, sys
st, ref, bin, q, maxd, more = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
d = json.load(open(st))
bad, over = [], 0
for t in d['tasks']:
    if t['state'] != 'done':
        bad.append(f"{t['id']} {t['state']}")
        continue
    if t['deliveries'] > maxd:
        over += 1
    base = os.path.basename(t['source']).rsplit('-', 1)[0]
    want = open(os.path.join(ref, base + '.txt')).read()
    got = subprocess.run([bin, 'result', '--broker', q, t['id'], '--format', 'txt'],
                         capture_output=True, text=True).stdout
    if got.strip() != want.strip():
        bad.append(f"{t['id']} {t['source']}: text differs")
print(f"# {len(d['tasks'])} tasks, {len(bad)} wrong, {over} delivered more than {maxd} times")
for b in bad[:5]:
    print('#', b)
sys.exit(0 if not bad and over <= more else 1)
PY
}

# --- 2. Batches across workers at -c 4 --------------------------------------------------
fresh
copies 3
"$OCRPOOL" submit --broker "$Q" -l "$ML" "$TMP"/p3/*.png >/dev/null
total=$(ls "$TMP"/p3/*.png | wc -l)
start_worker "$TMP/b.log" -c 4 --recognizer shared --recognizer-wait-ms 5
wait_finished "$total"
wait_rec lines "v > 0" 5
echo "# recognizer at -c 4: $(rec lines) lines, $(rec batches) batches, histogram $(rec batch_hist) (<=1,2,4,8,16,32,more), $(rec multi_worker_batches) with lines of more than one worker, wait mean $(rec wait_mean_ms) ms"
check "-c 4: batches of more than one line, and of lines of more than one worker" \
    python3 -c "import json,sys; h=json.loads(sys.argv[1]); sys.exit(0 if sum(h[1:]) > 0 and int(sys.argv[2]) > 0 else 1)" \
    "$(rec batch_hist)" "$(rec multi_worker_batches)"
check "-c 4: every page right, each delivered once" texts_right 1
check "monitor shows the recognizer's row and figures" bash -c \
    "'$OCRPOOL' monitor --node $WPID | grep >/dev/null '^  recog ' && '$OCRPOOL' monitor --node $WPID | grep >/dev/null 'recognizer 0: [1-9][0-9]* lines'"

# --- 3. kill -9 of the recognizer mid-run -----------------------------------------------
# Enough pages that the run outlasts the recognizer's figures (every second) by seconds.
copies 25
"$OCRPOOL" submit --broker "$Q" -l "$ML" "$TMP"/p25/*.png >/dev/null
total=$((total + $(ls "$TMP"/p25/*.png | wc -l)))
before=$(rec lines)
check "the recognizer reads lines of the second run" wait_rec lines "v > $before" 30
rpid=$(rec pid)
kill -9 "$rpid"
finished=$("$OCRPOOL" status --broker "$Q" --json 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['done']+d['failed']+d['buried'])")
echo "# killed recognizer $rpid after $(($(rec lines) - before)) lines of the second run, $finished of $total pages finished"
check "... killed mid-run (pages still to do)" test "$finished" -lt "$total"
wait_finished "$total"
check "recognizer killed mid-run: no page lost, none done twice, every text right" texts_right 1
check "the master restarted it (a new pid, ready)" wait_rec state "v == 'ready'" 10
check "... counted as a restart, under a new pid" bash -c "[ \"$(rec restarts)\" -ge 1 ] && [ \"$(rec pid)\" != $rpid ]"
grep -q "recognizer 0 (pid $rpid) was killed by signal 9" "$TMP/b.log"
check "the log says the recognizer was killed" test $? = 0
# A reload: the old zygote's recognizer goes with it, the new zygote's takes over.
rpid=$(rec pid)
kill -HUP "$WPID"
wait_log "$TMP/b.log" "recognizer 0 (pid $rpid) of the previous configuration ended" 30
reloaded=0
wait_rec state "v == 'ready'" 10 && [ "$(rec pid)" != "$rpid" ] && [ "$(rec node.fallbacks)" = 0 ] &&
    reloaded=1
check "reload: the new zygote's recognizer takes over (ready, a new pid, no fallback)" test $reloaded = 1
stop_worker

# --- 4. A worker killed mid-batch --------------------------------------------------------
fresh
copies 3
"$OCRPOOL" submit --broker "$Q" -l "$ML" "$TMP"/p3/*.png >/dev/null
total=$(ls "$TMP"/p3/*.png | wc -l)
# Batches wait 1 s for lines: a worker's lines sit in the recognizer when it is killed.
start_worker "$TMP/k.log" -c 3 --recognizer shared --recognizer-wait-ms 1000 --recognizer-batch 256
wait_rec state "v == 'ready'" 30
rpid=$(rec pid)
# A busy worker, while lines wait in the recognizer's queue.
victim=
for _ in $(seq 1 300); do
    victim=$("$OCRPOOL" monitor --json --node "$WPID" 2>/dev/null | python3 -c "
import json, sys
try:
    n = json.load(sys.stdin)['nodes'][0]
except (ValueError, IndexError, KeyError):
    sys.exit(0)
q = n['recognizer']['recognizers'][0].get('queued', 0)
ws = [w for w in n['workers'] if w.get('task')]
print(ws[0]['pid'] if ws and q > 0 else '')")
    [ -n "$victim" ] && break
    sleep 0.02
done
check "a busy worker found while lines wait in the recognizer" test -n "$victim"
[ -n "$victim" ] && kill -9 "$victim"
echo "# killed worker $victim (recognizer queue: $(rec queued) lines)"
wait_finished "$total"
check "a worker killed mid-batch: its page alone delivered again, every text right" texts_right 1 1
check "... the recognizer went on (pid $rpid, ready)" bash -c "[ \"$(rec pid)\" = $rpid ] && [ \"$(rec state)\" = ready ]"
grep -q "worker $victim crashed" "$TMP/k.log"
check "the log names the killed worker" test $? = 0
stop_worker

# --- 5. A recognizer that cannot start, one that keeps dying: the workers read ----------
l=${langs[0]}
OCRPOOL_FAULT=recognizer-bad-model ocr -l "$l" -j 2 --recognizer shared --log-level info \
    -o "$TMP/f" "$F/$l.png" "$F/$l.rgb.png" "$F/$l.pdf" 2>"$TMP/f.log"
check "a recognizer that cannot start: the workers' text" same_dirs "$TMP/w-$l" "$TMP/f"
check "... the fallback logged with its reason" \
    grep -q "recognizer 0 cannot start: fault injection: recognizer-bad-model: the workers read their lines themselves" "$TMP/f.log"
fresh
copies 1
"$OCRPOOL" submit --broker "$Q" -l "$ML" "$TMP"/p1/*.png >/dev/null
OCRPOOL_FAULT=recognizer-crash start_worker "$TMP/c.log" -c 2 --recognizer shared
wait_finished "${#pngs[@]}"
check "a recognizer that keeps dying: the node falls back, counted once" wait_rec node.fallbacks "v == 1" 30
check "... with its reason logged" grep -q "died 5 times in a row" "$TMP/c.log"
check "... and the pages read right in the workers" texts_right 1
stop_worker

# --- /metrics: the recognizer's memory, lines and batches -------------------------------
port=$(freeport)
fresh
"$OCRPOOL" serve --listen 127.0.0.1:$port --broker "$Q" --token t0k --engine lstm -l "$ML" -c 2 \
    --recognizer shared >"$TMP/serve.log" 2>&1 &
WPID=$!
PIDS+=("$WPID")
wait_log "$TMP/serve.log" "recognizer 0 ready" 30
# metrics_ok: /metrics has the recognizer's PSS, lines, batch-size histogram and fallbacks.
metrics_ok() {
    curl -s -H "Authorization: Bearer t0k" "http://127.0.0.1:$port/metrics" >"$TMP/metrics.txt"
    grep -Eq '^ocrpool_recognizer_pss_bytes\{index="0",device="cpu"\} [1-9]' "$TMP/metrics.txt" &&
        grep -q '^ocrpool_recognizer_lines_total{index="0",device="cpu"} ' "$TMP/metrics.txt" &&
        grep -q '^ocrpool_recognizer_batch_lines_bucket{index="0",le="+Inf"} ' "$TMP/metrics.txt" &&
        grep -q '^ocrpool_recognizer_fallbacks_total 0' "$TMP/metrics.txt"
}
# Its first figures come after a second (longer on a busy machine): polled, 30 s at most.
for _ in $(seq 1 300); do
    metrics_ok && break
    sleep 0.1
done
check "/metrics: the recognizer's PSS, lines, batch-size histogram and fallbacks" metrics_ok
# The dashboard's table of recognizers, as a browser renders it.
if command -v chromium >/dev/null; then
    timeout 60 chromium --headless --no-sandbox --disable-gpu --virtual-time-budget=6000 \
        --dump-dom "http://127.0.0.1:$port/#token=t0k" >"$TMP/dash.html" 2>/dev/null
    check "dashboard: the recognizer's row (device cpu, ready)" \
        grep -q '<table id="recog"><tbody><tr><th>pid</th>.*<td>cpu</td><td>ready</td>' "$TMP/dash.html"
else
    skip "dashboard (no chromium)"
fi
stop_worker
finish
