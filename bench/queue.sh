#!/usr/bin/env bash
# The queue's own cost (not part of `make test`): empty tasks through the SQLite queue.
#  1. `ocrpool submit` of M pages in one call (a small PNG named M times: its header is
#     read for each page, as for any file).
#  2. The same M tasks through `ocrpool worker -c 2 --engine null` (no pixels read): the
#     span from the first page's start to the last page's end, from the queue's own times.
# Goals (issue 18): submit >= 20000 tasks/s, the pool >= 5000 tasks/s.
# M=20000 by default; QUEUE_M=N to change it.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
OCRPOOL=$BUILD/ocrpool
work=$BUILD/bench/queue
m=${QUEUE_M:-20000}
rm -rf "$work"
mkdir -p "$work"
calc() { awk "BEGIN { print $1 }"; }
python3 bench/tiny_png.py "$work/tiny.png"
q="sqlite://$work/empty.db"
awk -v n="$m" -v f="$work/tiny.png" 'BEGIN { for (i = 0; i < n; i++) print f }' >"$work/files"
t0=$(date +%s.%N)
xargs -a "$work/files" -s 2000000 "$OCRPOOL" submit --broker "$q" >"$work/ids"
t1=$(date +%s.%N)
got=$(wc -l <"$work/ids")
[ "$got" -eq "$m" ] || { echo "submit queued $got tasks of $m"; exit 1; }
"$OCRPOOL" worker --broker "$q" --engine null -c 2 --log-level warn &
wp=$!
# Asked once a second: each `status` is a process of its own that reads the whole queue, and
# asked five times a second they took a fifth of a core from the pool measured.
until "$OCRPOOL" status --broker "$q" | grep >/dev/null "^all groups: 0 queued, 0 running"; do
    sleep 1
done
kill -TERM $wp
wait $wp || true
read -r span done_n < <(python3 -c "
import sqlite3; c = sqlite3.connect('$work/empty.db')
a, b, n = c.execute('select min(started), max(finished), sum(state = 2) from tasks').fetchone()
print(b - a, n)")
[ "$done_n" -eq "$m" ] || { echo "the pool finished $done_n tasks of $m"; exit 1; }
printf 'submit: %d tasks in %.2f s (%.0f tasks/s, headers read; goal 20000)\n' "$m" \
    "$(calc "$t1 - $t0")" "$(calc "$m / ($t1 - $t0)")"
printf 'pool:   %d tasks in %.2f s (%.0f tasks/s, %.3f ms per task, -c 2; goal 5000)\n' "$m" \
    "$span" "$(calc "$m / $span")" "$(calc "$span * 1000 / $m")"
