#!/usr/bin/env bash
# The chaos run at 100 pages (make chaos runs 1000): two nodes on Redis,
# then two on one SQLite file, with workers, zygotes, masters and Redis
# killed under them (tests/chaos.sh). Every page must end with exactly one
# result: none lost, none stored twice.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3

# A SIGTERM to the node's whole process group (systemd's default KillMode, timeout(1),
# kill -TERM -PGID) is a warm stop: the zygote and the workers leave the signal to the
# master, and the running pages finish (the zygote died of it, and its workers with it).
mkdir -p "$TMP/grp"
cp "$FIXTURES/eng.png" "$TMP/grp/a.png"
Q="sqlite://$TMP/grp/q.db"
"$OCRPOOL" submit --broker "$Q" "$TMP/grp/a.png" "$TMP/grp/a.png" >/dev/null
OCRPOOL_NULL_SLEEP_MS=1500 OCRPOOL_LOG_LEVEL=info setsid "$OCRPOOL" worker --broker "$Q" \
    --engine null -c 2 >"$TMP/grp/w.log" 2>&1 &
G=$!
for _ in $(seq 300); do # until both pages are running
    "$OCRPOOL" status --broker "$Q" | grep >/dev/null '0 queued, 2 running' && break
    sleep 0.1
done
sleep 0.2
check "the node leads its own process group" test "$(ps -o pgid= -p "$G" | tr -d ' ')" = "$G"
kill -TERM -- "-$G"
wait "$G"
check "a SIGTERM to the node's process group: the node exits 0" test $? -eq 0
check "... after both running pages finished" \
    bash -c "'$OCRPOOL' status --broker '$Q' | grep >/dev/null '0 queued, 0 running, 2 done'"
check "... and the zygote was not killed by it" bash -c "! grep -q 'zygote .* is gone' '$TMP/grp/w.log'"
grep -E 'warn|error' "$TMP/grp/w.log" | sed 's/^/# /'

$PY "$here/../chaos_check.py" selftest >"$TMP/self.out" 2>&1
check "the chaos count says no when it should (made-up observations)" test $? -eq 0
sed 's/^/# /' "$TMP/self.out"
BUILD=${BUILD:-build} OCRPOOL=$OCRPOOL FIXTURES=$FIXTURES \
    bash "$here/../chaos.sh" 100 >"$TMP/chaos.out" 2>&1
rc=$?
sed 's/^/# /' "$TMP/chaos.out"
line() { grep "^chaos $1: " "$TMP/chaos.out"; }
for b in redis sqlite; do
    check "$b: 100 pages, none lost" bash -c "echo '$(line $b)' | grep >/dev/null ' 0 lost,'"
    check "$b: none duplicated" bash -c "echo '$(line $b)' | grep >/dev/null ' 0 duplicated'"
    check "$b: processes were killed during the run" \
        bash -c "echo '$(line $b)' | grep -Eq ', [1-9][0-9]* kills'"
    # chaos.sh's first kills take each kind once (CHAOS_FIRST): a short run kills each.
    for k in master zygote worker; do
        check "$b: a $k was killed" bash -c "echo '$(line $b)' | grep -Eq ' [1-9][0-9]* $k '"
    done
done
check "redis: redis-server was killed, and started again on its AOF" \
    bash -c "echo '$(line redis)' | grep -Eq ' [1-9][0-9]* redis \)' &&
             ! grep -q 'redis-server did not start again' '$TMP/chaos.out'"
check "redis: nothing left unacknowledged or queued at the end" \
    bash -c "grep -q 'unacknowledged messages left: 0, queued: 0' '$TMP/chaos.out'"
check "the last line, and chaos.sh exits 0" \
    bash -c "[ $rc -eq 0 ] && tail -1 '$TMP/chaos.out' | grep -Eq '^chaos: 200 pages, [0-9]+ kills, 0 lost, 0 duplicated$'"
finish
