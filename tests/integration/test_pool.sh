#!/usr/bin/env bash
# The worker pool's semantics, each against real processes on a real
# SQLite queue: concurrency and prefetch, late acknowledgement when a
# worker is killed, master loss and lease renewal, recycling by count and
# by memory, the hard memory limit, the global memory budget, time limits,
# poison pages, shared models, priorities and groups, result expiry,
# signals, and `ocr -j` resuming. OCRPOOL_FAULT (see src/pool/zygote.c)
# makes chosen pages slow or crash.
source "$(dirname "$0")/lib.sh"
F=$FIXTURES
CHECK="python3 $here/pool_check.py"
export OCRPOOL_LOG_LEVEL=info

# Pages with telling names (the fault seam matches on the source path).
mkdir -p "$TMP/p"
for i in 1 2 3 4 5 6 7 8; do cp "$F/eng.png" "$TMP/p/small$i.png"; done
cp "$F/eng.png" "$TMP/p/slowpage.png"
cp "$F/eng.png" "$TMP/p/poison.png"
cp "$F/big.png" "$TMP/p/big1.png"
cp "$F/big.png" "$TMP/p/big2.png"

n=0
fresh() { # fresh: a new queue URL in $Q
    n=$((n + 1))
    Q="sqlite://$TMP/q$n.db"
}
submit() { "$OCRPOOL" submit --broker "$Q" "$@"; }
status_json() { "$OCRPOOL" status --broker "$Q" --json --tasks "$@" >"$TMP/status.json"; }
start_worker() { # start_worker LOG [flags]: runs a node in the background, pid in $WPID
    local log=$1
    shift
    "$OCRPOOL" worker --broker "$Q" "$@" >"$log" 2>&1 &
    WPID=$!
}
wait_finished() { # wait_finished COUNT [SECONDS]: until COUNT pages are done/failed/buried
    local want=$1 limit=${2:-60} t=0
    while [ $t -lt $((limit * 10)) ]; do
        if "$OCRPOOL" status --broker "$Q" --json 2>/dev/null |
            python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if d['done']+d['failed']+d['buried'] >= $want else 1)"; then
            return 0
        fi
        sleep 0.1
        t=$((t + 1))
    done
    echo "# timed out waiting for $want finished pages"
    return 1
}
stop_worker() { # warm stop of $WPID; returns its exit status
    kill -TERM "$WPID" 2>/dev/null
    wait "$WPID"
}
log_pid() { # log_pid LOG PATTERN: the pid of the first log line matching PATTERN
    grep -m1 -- "$2" "$1" | awk '{print $2}'
}

# --- Concurrency N and prefetch multiplier m -------------------------------
fresh
submit -l eng --group c "$TMP"/p/small*.png >/dev/null
start_worker "$TMP/c.log" -c 2 --prefetch-multiplier 1
wait_finished 8
stop_worker
status_json c
check "concurrency 2: never more than 2 pages at once, and 2 at times" $CHECK overlap "$TMP/status.json" 2
held=$(grep -o 'holding [0-9]*' "$TMP/c.log" | awk '{print $2}' | sort -n | tail -1)
check "prefetch 1 x 2 workers: never more than 2 leases held (max $held)" test "$held" -le 2

fresh
submit -l eng --group c "$TMP"/p/small*.png >/dev/null
start_worker "$TMP/c3.log" -c 1 --prefetch-multiplier 3
wait_finished 8
stop_worker
status_json c
check "concurrency 1: one page at a time" $CHECK overlap "$TMP/status.json" 1
held=$(grep -o 'holding [0-9]*' "$TMP/c3.log" | awk '{print $2}' | sort -n | tail -1)
check "prefetch 3 x 1 worker: at most 3 leases held, and 3 at times (max $held)" test "$held" -eq 3

# --- Acks late: kill -9 a worker in the middle of a page --------------------
fresh
id=$(submit -l eng "$TMP/p/slowpage.png")
OCRPOOL_FAULT=sleep:2:slowpage start_worker "$TMP/ack.log" -c 1
wait_log "$TMP/ack.log" "fault injection: sleeping" 30
wpid=$(log_pid "$TMP/ack.log" "fault injection: sleeping")
kill -9 "$wpid"
wait_finished 1 30
stop_worker
status_json
check "acks late: the killed worker's page is done again (2 deliveries)" $CHECK state "$TMP/status.json" "$id" done 2
check "acks late: its result is stored once" test "$(grep -c "page $id done" "$TMP/ack.log")" -eq 1
check "acks late: the result is there" bash -c "'$OCRPOOL' result --broker '$Q' $id | grep >/dev/null 'quick brown fox'"
check "the log says why the page went back" grep -q "goes back to the queue (delivery 1 of 3): worker $wpid crashed: killed by signal 9 (SIGKILL)" "$TMP/ack.log"

# --- Master loss: kill -9 the master; leases run out; nothing is lost --------
fresh
id=$(submit -l eng "$TMP/p/slowpage.png")
submit -l eng "$TMP/p/small1.png" >/dev/null
OCRPOOL_FAULT=sleep:3:slowpage start_worker "$TMP/m1.log" -c 1 --lease-timeout 2
wait_log "$TMP/m1.log" "fault injection: sleeping" 30
wpid=$(log_pid "$TMP/m1.log" "fault injection: sleeping")
kill -9 "$WPID"
wait "$WPID" 2>/dev/null
sleep 0.5
gone() { [ ! -e "/proc/$1" ] || grep >/dev/null '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
check "children die with the master (worker $wpid gone)" gone "$wpid"
status_json
check "the page stays leased to the dead node until its lease runs out" \
    python3 -c "import json; t=[t for t in json.load(open('$TMP/status.json'))['tasks'] if t['id']=='$id'][0]; assert t['state']=='leased', t"
start_worker "$TMP/m2.log" -c 1 --lease-timeout 2
wait_finished 2 30
stop_worker
status_json
check "master loss: the page comes back and is done" $CHECK state "$TMP/status.json" "$id" done 2

# A long page is never given to a second node while its worker lives.
fresh
id=$(submit -l eng "$TMP/p/slowpage.png")
OCRPOOL_FAULT=sleep:5:slowpage start_worker "$TMP/r1.log" -c 1 --lease-timeout 1.5
first=$WPID
wait_log "$TMP/r1.log" "fault injection: sleeping" 30
OCRPOOL_FAULT=sleep:5:slowpage start_worker "$TMP/r2.log" -c 1 --lease-timeout 1.5
# The second node asks for pages while the first one's page runs (it is ready well before
# the page's 5 s are over), so that it could take the page if its lease ran out.
wait_log "$TMP/r2.log" "worker [0-9]* ready" 30
r2_ready_before_done=$("$OCRPOOL" status --broker "$Q" --json | python3 -c "import json,sys; print(int(json.load(sys.stdin)['done'] == 0))")
wait_finished 1 30
kill -TERM "$first" && wait "$first"
stop_worker
status_json
check "lease renewal: a 5 s page under a 1.5 s lease is delivered once" $CHECK state "$TMP/status.json" "$id" done 1
check "lease renewal: the second node, asking all along, never leased or started it" \
    bash -c "[ '$r2_ready_before_done' = 1 ] && ! grep -Eq 'lease: [0-9]+ more|fault injection' '$TMP/r2.log'"

# A node frozen past its lease (issue 15): a second node leases the page and runs it; the
# first one wakes, finds its worker gone and releases the page with its last delivery. That
# late release is ignored (it would have buried the page and thrown the live result away):
# the second node's result is stored.
fresh
id=$(submit -l eng "$TMP/p/slowpage.png")
OCRPOOL_FAULT=sleep:4:slowpage start_worker "$TMP/fa.log" -c 1 --lease-timeout 1.5 --max-deliveries 2
fa=$WPID
wait_log "$TMP/fa.log" "fault injection: sleeping" 30
fawpid=$(log_pid "$TMP/fa.log" "fault injection: sleeping")
kill -STOP "$fa"
OCRPOOL_FAULT=sleep:4:slowpage start_worker "$TMP/fb.log" -c 1 --lease-timeout 1.5 --max-deliveries 2
wait_log "$TMP/fb.log" "fault injection: sleeping" 30
kill -9 "$fawpid"
kill -CONT "$fa"
wait_log "$TMP/fa.log" "late release from .* ignored" 10
wait_finished 1 30
kill -TERM "$fa" && wait "$fa"
stop_worker
status_json
check "a frozen node's late release is ignored: the live node's result is stored" \
    $CHECK state "$TMP/status.json" "$id" done 2
check "a frozen node's late release is said, with who holds the page now" \
    grep -q "a late release from .* ignored: it is leased to" "$TMP/fa.log"

# The zygote dies (its workers with it): a new one starts, the page is done.
fresh
id=$(submit -l eng "$TMP/p/slowpage.png")
OCRPOOL_FAULT=sleep:2:slowpage start_worker "$TMP/z.log" -c 1
wait_log "$TMP/z.log" "fault injection: sleeping" 30
kill -9 "$(log_pid "$TMP/z.log" "zygote ready")"
wait_finished 1 30
stop_worker
status_json
check "zygote lost: a new zygote starts" grep -q "the zygote died: starting a new one" "$TMP/z.log"
check "zygote lost: the page goes back, not counted against it, and is done" $CHECK state "$TMP/status.json" "$id" done 1

# --- Max tasks per child ---------------------------------------------------
fresh
submit -l eng "$TMP"/p/small[1-6].png >/dev/null
start_worker "$TMP/mt.log" -c 1 --max-tasks-per-child 2 --max-memory-per-child 0
wait_finished 6
stop_worker
status_json
check "max-tasks-per-child 2: 6 pages by 3 worker processes" $CHECK pids "$TMP/status.json" 3
check "max-tasks-per-child: the log says so" grep -q "after 2 pages (max-tasks-per-child)" "$TMP/mt.log"

# --- Max memory per child (Celery's meaning: checked after the page) -------
# Big pages: the node's --max-image-size 0 (a task may shrink its page, never ask the
# node for a larger one, so submit --max-image-size 0 would not do).
fresh
big=$(submit -l eng "$TMP/p/big1.png")
submit -l eng "$TMP/p/small1.png" >/dev/null
start_worker "$TMP/mm.log" -c 1 --max-memory-per-child 100000 --max-image-size 0
wait_finished 2
stop_worker
status_json
check "max-memory-per-child: the big page is done" $CHECK state "$TMP/status.json" "$big" done 1
check "max-memory-per-child: the log names the worker, the page and the peak" \
    grep -Eq "replacing worker [0-9]+: peak RSS [0-9]+ KiB during page $big over max-memory-per-child 100000 KiB" "$TMP/mm.log"
check "max-memory-per-child: the next page ran in a new worker" $CHECK pids "$TMP/status.json" 2

# Memory figures under AddressSanitizer are its own (shadow memory, quarantine):
# the memory-limit checks run in the normal build only.
if [ -z "${OCP_ASAN:-}" ]; then
# --- Hard memory limit: stopped during the page, retried, buried -------------
fresh
big=$(submit -l eng "$TMP/p/big1.png")
small=$(submit -l eng "$TMP/p/small1.png")
start_worker "$TMP/hm.log" -c 1 --hard-memory-limit 100 --max-deliveries 2 --max-image-size 0
wait_finished 2 60
stop_worker
status_json
check "hard memory limit: the big page is buried after 2 deliveries" $CHECK state "$TMP/status.json" "$big" buried 2
check "hard memory limit: the reason is the memory limit" \
    python3 -c "import json; t=[t for t in json.load(open('$TMP/status.json'))['tasks'] if t['id']=='$big'][0]; assert 'memory limit' in t['reason'], t['reason']; print('#', t['reason'])"
check "hard memory limit: its failure kind is memory_limit" \
    python3 -c "import json; t=[t for t in json.load(open('$TMP/status.json'))['tasks'] if t['id']=='$big'][0]; assert t['failure']=='memory_limit', t"
check "hard memory limit: the other page is done" $CHECK state "$TMP/status.json" "$small" done 1

# --- Global memory budget ----------------------------------------------------
# Estimates at 12 bytes/pixel: a big page (6000 x 6000, not resized) 432 MB, a small
# one 12 MB; two workers' baselines about 70 MB. A 600 MB budget fits one big page
# and small ones beside it, never two big ones.
fresh
submit -l eng "$TMP/p/big1.png" "$TMP/p/big2.png" >/dev/null
submit -l eng "$TMP"/p/small[1-6].png >/dev/null
start_worker "$TMP/mb.log" -c 2 --prefetch-multiplier 4 --memory-budget 600 --max-image-size 0
wait_finished 8 90
stop_worker
status_json
check "memory budget: big pages one after the other, small ones beside them" $CHECK serial "$TMP/status.json" big small
fresh
big=$(submit -l eng "$TMP/p/big1.png")
start_worker "$TMP/mb2.log" -c 1 --memory-budget 300 --max-image-size 0
wait_finished 1 30
stop_worker
status_json
check "memory budget: a page larger than the budget fails with a reason" \
    python3 -c "import json; t=json.load(open('$TMP/status.json'))['tasks'][0]; assert t['state']=='failed' and 'memory-budget 300 MB' in t['reason'], t; print('#', t['reason'])"

else
    echo "# memory limit and budget checks skipped under AddressSanitizer"
fi

# --- Time limits -------------------------------------------------------------
fresh
soft=$(submit -l eng "$F/lines.png")
start_worker "$TMP/tl.log" -c 1 --soft-time-limit 0.01
wait_finished 1 30
stop_worker
status_json
check "soft time limit: the page fails with 'timeout'" \
    python3 -c "import json; t=json.load(open('$TMP/status.json'))['tasks'][0]; assert t['state']=='failed' and 'timeout' in t['reason'], t"
check "soft time limit: its failure kind is soft_time_limit" \
    python3 -c "import json; t=json.load(open('$TMP/status.json'))['tasks'][0]; assert t['failure']=='soft_time_limit', t"
fresh
hard=$(submit -l eng "$TMP/p/slowpage.png")
submit -l eng "$TMP/p/small1.png" >/dev/null
OCRPOOL_FAULT=sleep:5:slowpage start_worker "$TMP/th.log" -c 1 --time-limit 1 --max-deliveries 2
wait_finished 2 40
stop_worker
status_json
check "hard time limit: worker killed, page retried then buried" $CHECK state "$TMP/status.json" "$hard" buried 2
check "hard time limit: its failure kind is time_limit" \
    python3 -c "import json; t=[t for t in json.load(open('$TMP/status.json'))['tasks'] if t['id']=='$hard'][0]; assert t['failure']=='time_limit', t"
check "hard time limit: the reason" grep -q "time limit: the page ran over 1.0 s" "$TMP/th.log"

# --- Poison pages ------------------------------------------------------------
fresh
poison=$(submit -l eng "$TMP/p/poison.png")
submit -l eng "$TMP"/p/small[1-3].png >/dev/null
# (AddressSanitizer would catch the SIGSEGV itself and exit 99: let it through.)
OCRPOOL_FAULT=crash:poison ASAN_OPTIONS=${ASAN_OPTIONS:-}:handle_segv=0 start_worker "$TMP/po.log" -c 2
wait_finished 4 40
sleep 0.5
stop_worker
rc=$?
status_json
check "poison page: buried after 3 deliveries, not looped on" $CHECK state "$TMP/status.json" "$poison" buried 3
check "poison page: its failure kind is crashed" \
    python3 -c "import json; t=[t for t in json.load(open('$TMP/status.json'))['tasks'] if t['id']=='$poison'][0]; assert t['failure']=='crashed', t"
check "poison page: the reason names the signal" \
    python3 -c "import json; t=[t for t in json.load(open('$TMP/status.json'))['tasks'] if t['id']=='$poison'][0]; assert 'SIGSEGV' in t['reason'], t['reason']; print('#', t['reason'])"
check "poison page: the other pages are done" python3 -c "import json; d=json.load(open('$TMP/status.json')); assert d['done'] == 3, d"
check "poison page: the node is still healthy and stops cleanly (exit $rc)" test "$rc" -eq 0

# --- Batches: batch-pages gives a worker several pages at once ---------------------
# Read together (the lstm engine runs their lines through shared forward passes), each
# page's result is the one it gets alone. The pages are queued before the node starts,
# so the one worker is given all four at once.
batch_run() { # batch_run NAME [worker flags]: the four test pages through one worker
    fresh
    submit -l san+eng "$F"/{eng,san,tam,hin}.png >"$TMP/$1.ids"
    start_worker "$TMP/$1.log" -c 1 --engine lstm -l san+eng --log-level debug "${@:2}"
    wait_finished 4 120
    stop_worker
    local id k=0
    mkdir -p "$TMP/$1"
    while read -r id; do
        k=$((k + 1))
        "$OCRPOOL" result --broker "$Q" --format txt "$id" >"$TMP/$1/$k.txt"
        "$OCRPOOL" result --broker "$Q" --format tsv "$id" >"$TMP/$1/$k.tsv"
    done <"$TMP/$1.ids"
}
batch_run b1
batch_run b4 --batch-pages 4
check "batch-pages 4: one worker read the 4 pages together" grep -q "4 pages read together" "$TMP/b4.log"
check "batch-pages 1: no pages read together" bash -c "! grep -q 'pages read together' '$TMP/b1.log'"
check "batch-pages 4: each page's text and boxes as when read alone (4 pages read)" \
    bash -c "[ \$(grep -l . '$TMP'/b4/*.txt | wc -l) -eq 4 ] && diff -r '$TMP/b1' '$TMP/b4'"
# A poison page in a batch: the batch's pages go back uncounted and run alone, where the
# poison page alone is counted and buried.
fresh
poison=$(submit -l eng "$TMP/p/poison.png")
submit -l eng "$TMP"/p/small[1-3].png >/dev/null
OCRPOOL_FAULT=crash:poison ASAN_OPTIONS=${ASAN_OPTIONS:-}:handle_segv=0 \
    start_worker "$TMP/bp.log" -c 1 --batch-pages 4 --prefetch-multiplier 1
wait_finished 4 60
stop_worker
status_json
check "batch-pages: a crash in a batch sends its pages back to run alone" \
    grep -q "4 pages read together: each runs alone next" "$TMP/bp.log"
check "batch-pages: the poison page buried after 3 deliveries of its own" \
    $CHECK state "$TMP/status.json" "$poison" buried 3
check "batch-pages: the other pages are done" \
    python3 -c "import json; d=json.load(open('$TMP/status.json')); assert d['done'] == 3, d"

# --- Shared models, malloc_trim ------------------------------------------------
# Both engines: libtesseract's models live in the zygote's heap (a worker shares over 20 MB
# of them); ours, the default engine, are read into about 1 MB a language and map their
# dictionaries, so a worker shares less, but nearly all it has: over 90 % of its RSS, and
# under 1 MB of its own (120 KB here; a worker that loaded a model of its own and read a
# page with it had 6.9 MB).
for engine in tesseract lstm; do
fresh
submit -l eng "$TMP/p/big1.png" >/dev/null
start_worker "$TMP/sh.log" --engine $engine -c 2 -l eng+san --max-memory-per-child 0 --max-image-size 0
wait_finished 1 60
# The page is in eng, the node's lang eng+san: its worker reads it with a copy of its own and
# is replaced once idle (zygote.c: every model shared); its successor shares. The workers
# checked are those not replaced, once two are ready.
sharing() {
    local replaced
    replaced=$(grep -o 'replacing worker [0-9]*' "$TMP/sh.log" | awk '{print $3}')
    for p in $(grep -o 'worker [0-9]* ready' "$TMP/sh.log" | awk '{print $2}'); do
        grep -qx "$p" <<<"$replaced" || echo "$p"
    done
}
for _ in $(seq 1 50); do
    [ "$(sharing | wc -l)" -ge 2 ] && break
    sleep 0.1
done
live=0
for p in $(sharing); do
    live=$((live + 1))
    sh=$(awk '/^Shared_(Clean|Dirty)/ {s += $2} END {print s}' /proc/$p/smaps_rollup)
    rss=$(awk '/^Rss:/ {print $2}' /proc/$p/smaps_rollup)
    echo "# $engine: worker $p: $(grep -E '^(Rss|Pss):' /proc/$p/smaps_rollup | tr -s ' ' | tr '\n' ' ') shared ${sh} kB"
    if [ $engine = tesseract ]; then
        check "shared models ($engine): worker $p shares over 20 MB with its siblings" test "$sh" -gt 20000
    else
        check "shared models ($engine): worker $p shares over 90 % of its RSS with its siblings" \
            test $((sh * 10)) -gt $((rss * 9))
        if [ -n "${OCP_ASAN:-}" ]; then
            skip "shared models ($engine): under 1 MB of its own (AddressSanitizer's shadow)"
        else
            check "shared models ($engine): worker $p has under 1 MB of its own" \
                test $((rss - sh)) -lt 1024
        fi
    fi
done
check "shared models ($engine): two workers checked" test $live -eq 2
line=$(grep -m1 'done by worker' "$TMP/sh.log")
peak=$(sed -n 's/.*peak RSS \([0-9]*\) KiB.*/\1/p' <<<"$line")
after=$(sed -n 's/.*KiB, \([0-9]*\) KiB after.*/\1/p' <<<"$line")
echo "# $engine: big page: peak RSS $peak KiB, $after KiB after malloc_trim"
[ -n "${OCP_ASAN:-}" ] ||
    check "malloc_trim ($engine): the worker goes back near its idle size after a big page" \
        test $((peak - after)) -gt 80000
stop_worker
done

# --- Priorities and groups, result expiry ---------------------------------------
fresh
submit -l eng --group low --priority 0 "$TMP"/p/small[1-3].png >/dev/null
submit -l eng --group high --priority 9 "$TMP"/p/small[4-6].png >/dev/null
start_worker "$TMP/pr.log" -c 1
wait_finished 6
stop_worker
status_json
check "priority 9 before priority 0" $CHECK order "$TMP/status.json" high low
check "groups: counts per group" bash -c "'$OCRPOOL' status --broker '$Q' high | grep >/dev/null '^high: 0 queued, 0 running, 3 done, 0 failed, 0 buried'"
sleep 1.2
start_worker "$TMP/ex.log" -c 1 --result-expires 1
wait_log "$TMP/ex.log" "finished pages expired" 10
stop_worker
check "result-expires: finished pages are gone" bash -c "'$OCRPOOL' status --broker '$Q' | grep >/dev/null '0 done'"

# --- Requeue buried pages ---------------------------------------------------------
fresh
poison=$(submit -l eng --group book "$TMP/p/poison.png")
OCRPOOL_FAULT=crash:poison start_worker "$TMP/rq.log" -c 1 --max-deliveries 1
wait_finished 1 30
stop_worker
check "requeue --buried: puts it back" bash -c "'$OCRPOOL' requeue --broker '$Q' --buried book | grep >/dev/null '^1 page back in the queue$'"
start_worker "$TMP/rq2.log" -c 1
wait_finished 1 30
stop_worker
check "requeue: done on the next try" bash -c "'$OCRPOOL' status --broker '$Q' book | grep >/dev/null '1 done'"

# --- Signals ---------------------------------------------------------------------
fresh
id=$(submit -l eng "$TMP/p/slowpage.png")
OCRPOOL_FAULT=sleep:2:slowpage start_worker "$TMP/sw.log" -c 1
wait_log "$TMP/sw.log" "fault injection: sleeping" 30
kill -TERM "$WPID"
wait "$WPID"
rc=$?
status_json
check "SIGTERM: warm, the running page finishes (exit $rc)" $CHECK state "$TMP/status.json" "$id" done 1

# A node holding nothing stops at once (how `ocr` ends its node when its pages are done).
fresh
start_worker "$TMP/idle.log" -c 2
wait_log "$TMP/idle.log" "worker [0-9]* ready" 30
t0=$(date +%s.%N)
stop_worker
rc=$?
t1=$(date +%s.%N)
check "SIGTERM with nothing held: the node ends at once (exit $rc, $(python3 -c "print(round($t1-$t0,2))") s)" \
    python3 -c "import sys; sys.exit(0 if $rc == 0 and $t1 - $t0 < 2 else 1)"

fresh
id=$(submit -l eng "$TMP/p/slowpage.png")
OCRPOOL_FAULT=sleep:20:slowpage start_worker "$TMP/sq.log" -c 1
wait_log "$TMP/sq.log" "fault injection: sleeping" 30
t0=$(date +%s.%N)
kill -QUIT "$WPID"
wait "$WPID"
t1=$(date +%s.%N)
status_json
check "SIGQUIT: cold, at once ($(python3 -c "print(round($t1-$t0,2))") s)" python3 -c "import sys; sys.exit(0 if $t1 - $t0 < 5 else 1)"
check "SIGQUIT: the page is back in the queue, its delivery not counted" $CHECK state "$TMP/status.json" "$id" ready 0

fresh
submit -l eng "$TMP"/p/small[1-2].png >/dev/null
printf 'max-tasks-per-child = 50\n' >"$TMP/hup.ini"
start_worker "$TMP/hup.log" -c 1 --config "$TMP/hup.ini"
wait_finished 2 30
before=$(grep -o 'worker [0-9]* started' "$TMP/hup.log" | wc -l)
printf 'max-tasks-per-child = 1\n' >"$TMP/hup.ini"
kill -HUP "$WPID"
wait_log "$TMP/hup.log" "reload: configuration re-read" 20
submit -l eng "$TMP"/p/small[3-5].png >/dev/null
wait_finished 5 30
stop_worker
after=$(grep -o 'worker [0-9]* started' "$TMP/hup.log" | wc -l)
check "SIGHUP: workers replaced, the new file's max-tasks-per-child 1 in force ($before -> $after starts)" test "$after" -ge $((before + 3))

# A reload whose engine cannot load leaves the running configuration in force, intact (the
# pool owns the settings its configuration points into; they outlive the next reload).
printf 'max-tasks-per-child = 1\n' >"$TMP/hup.ini"
start_worker "$TMP/hup2.log" -c 1 --config "$TMP/hup.ini"
wait_log "$TMP/hup2.log" "worker [0-9]* ready" 30
printf 'max-tasks-per-child = 2\n' >"$TMP/hup.ini"
kill -HUP "$WPID"
wait_log "$TMP/hup2.log" "reload: configuration re-read" 20
printf 'max-tasks-per-child = 3\nlang = nosuchlang\n' >"$TMP/hup.ini"
kill -HUP "$WPID"
wait_log "$TMP/hup2.log" "keeping the running configuration" 20
"$OCRPOOL" monitor --json --node "$WPID" >"$TMP/hup2.json"
check "SIGHUP twice, the second abandoned: the running settings are intact" python3 -c "
import json; s = json.load(open('$TMP/hup2.json'))['nodes'][0]['settings']; print('#', s)
assert s['lang'] == 'eng' and s['max_tasks_per_child'] == 2 and isinstance(s['engine'], str), s"
submit -l eng "$TMP/p/small6.png" >/dev/null
check "SIGHUP twice: the node still does pages" wait_finished 6 30
stop_worker

# --- A warm drain does not spin: the master sleeps while the last pages finish ----------
fresh
cp "$F/eng.png" "$TMP/p/spinA.png"
cp "$F/eng.png" "$TMP/p/spinB.png"
OCRPOOL_FAULT=sleep:4:spin start_worker "$TMP/spin.log" -c 2
submit -l eng "$TMP/p/spinA.png" >/dev/null
wait_log "$TMP/spin.log" "fault injection: sleeping" 30
sleep 1.5
submit -l eng "$TMP/p/spinB.png" >/dev/null
for _ in $(seq 1 100); do [ "$(grep -c 'fault injection: sleeping' "$TMP/spin.log")" -ge 2 ] && break; sleep 0.1; done
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null; }
c0=$(cpu_ticks "$WPID")
kill -TERM "$WPID"
c1=$c0
while kill -0 "$WPID" 2>/dev/null; do
    c=$(cpu_ticks "$WPID")
    [ -n "$c" ] && c1=$c
    sleep 0.1
done
wait "$WPID"
check "warm drain: both pages finish" grep -q "page .* done by worker" "$TMP/spin.log"
check "warm drain: the master does not spin while the last page runs ($((c1 - c0)) ticks of CPU)" \
    test $((c1 - c0)) -lt 50

# acks-late off: a page is acknowledged when its worker gets it, and its lease (the queue's
# "early ack") is not renewed back to lease-timeout while it runs.
fresh
id=$(submit -l eng "$TMP/p/slowpage.png")
OCRPOOL_ACKS_LATE=false OCRPOOL_FAULT=sleep:4:slowpage start_worker "$TMP/al.log" -c 1 --lease-timeout 1.5
wait_log "$TMP/al.log" "fault injection: sleeping" 30
sleep 1.5
check "acks-late off: the running page's early ack is not renewed away" python3 -c "
import sqlite3, time
r = sqlite3.connect('$TMP/q$n.db').execute('SELECT lease_expires FROM tasks WHERE id = ?', ('$id',)).fetchone()
print('# lease ends in %.0f s' % (r[0] - time.time())); assert r[0] - time.time() > 1e8"
stop_worker

# A queue file whose schema version is negative is refused, not migrated.
fresh
python3 -c "import sqlite3; c = sqlite3.connect('$TMP/q$n.db'); c.execute('PRAGMA user_version = -1'); c.commit()"
check "a queue of schema version -1 is refused" \
    bash -c "! '$OCRPOOL' status --broker '$Q' 2>'$TMP/neg.err' && grep -q 'queue schema version -1 is not valid' '$TMP/neg.err'"

# --- ocr -j 2: interrupt it, run it again: it resumes ---------------------------------
mkdir -p "$TMP/book"
for i in $(seq -w 1 10); do cp "$F/eng.png" "$TMP/book/page$i.png"; done
OCRPOOL_FAULT=sleep:0.4:page "$OCRPOOL" ocr -j 2 -l eng -o "$TMP/bookout" "$TMP"/book/*.png 2>"$TMP/int.err" &
opid=$!
for _ in $(seq 1 100); do [ "$(ls "$TMP/bookout"/*.txt 2>/dev/null | wc -l)" -ge 3 ] && break; sleep 0.1; done
kill -INT "$opid"
wait "$opid"
rc=$?
got=$(ls "$TMP/bookout"/*.txt | wc -l)
check "ocr interrupted: exit 1 (got $rc) with $got of 10 pages written" test $rc -eq 1 -a "$got" -lt 10
check "ocr interrupted: says how to resume" grep -q "run the same command again to resume" "$TMP/int.err"
"$OCRPOOL" ocr -v -j 2 -l eng -o "$TMP/bookout" "$TMP"/book/*.png 2>"$TMP/res.err"
rc=$?
check "ocr rerun: exit 0 (got $rc)" test $rc -eq 0
check "ocr rerun: resumed from where it stopped" grep -q "resuming: $got of 10 pages done already" "$TMP/res.err"
check "ocr rerun: every page written" test "$(ls "$TMP/bookout"/*.txt | wc -l)" -eq 10
check "ocr rerun: only the missing pages were done" test "$(grep -c 'lines, ' "$TMP/res.err")" -eq $((10 - got))
finish
