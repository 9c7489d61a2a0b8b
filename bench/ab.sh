#!/usr/bin/env bash
# Two builds of ocrpool side by side in one run, for a change that must not
# cost speed (a refactoring): the same work through each, alternated, with
# the ratio new/old. Not part of `make test`.
#   OLD=/path/to/old/ocrpool bench/ab.sh [rounds]    (BUILD=build by default)
# 1. `ocrpool ocr -j 2 --engine lstm` over 24 fixture pages (eng, san, tam).
# 2. 1000 empty tasks through the SQLite queue at -c 2 (the null engine): the
#    master's own cost per page (lease, dispatch, store, acknowledge).
# 3. An idle node for 5 s: the master's CPU time (its loop's wake-ups).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
NEW=$PWD/$BUILD/ocrpool
OLD=${OLD:?set OLD to the other build\'s ocrpool binary}
rounds=${1:-2}
work=$PWD/$BUILD/bench-ab
FIXTURES=$PWD/$BUILD/fixtures
tests/data/make-fixtures.sh "$FIXTURES" >/dev/null
rm -rf "$work"
mkdir -p "$work/pages"
for i in $(seq -w 1 8); do
    for l in eng san tam; do cp "$FIXTURES/$l.png" "$work/pages/$l$i.png"; done
done
n=$(ls "$work/pages" | wc -l)
export XDG_RUNTIME_DIR
XDG_RUNTIME_DIR=$(mktemp -d)
chmod 700 "$XDG_RUNTIME_DIR"
trap 'rm -rf "$XDG_RUNTIME_DIR"' EXIT
calc() { awk "BEGIN { print $1 }"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }

ocr_run() { # ocr_run BIN: seconds for the pages
    local t0
    rm -rf "$work/out"
    t0=$(now)
    "$1" ocr -q -j 2 --engine lstm -l eng+san+tam -o "$work/out" "$work"/pages/*.png
    calc "$(now) - $t0"
}

empty_run() { # empty_run BIN: seconds from the first page started to the last finished
    local q="$work/empty.db" wp
    rm -f "$q"*
    for _ in $(seq 1 10); do
        "$1" submit --broker "sqlite://$q" $(for _ in $(seq 1 100); do echo "$FIXTURES/eng.png"; done) >/dev/null
    done
    "$1" worker --broker "sqlite://$q" --engine null -c 2 --log-level error &
    wp=$!
    while ! "$1" status --broker "sqlite://$q" | grep >/dev/null "^all groups: 0 queued, 0 running"; do sleep 0.2; done
    kill -TERM $wp
    wait $wp || true
    python3 -c "
import sqlite3; c = sqlite3.connect('$q')
a, b = c.execute('select min(started), max(finished) from tasks').fetchone(); print(b - a)"
}

idle_run() { # idle_run BIN: the idle master's CPU seconds over 5 s
    local q="$work/idle.db" wp t
    rm -f "$q"*
    "$1" worker --broker "sqlite://$q" --engine null -c 2 --log-level error &
    wp=$!
    sleep 1
    t=$(awk '{print $14 + $15}' /proc/$wp/stat)
    sleep 5
    t=$(( $(awk '{print $14 + $15}' /proc/$wp/stat) - t ))
    kill -TERM $wp
    wait $wp || true
    calc "$t / $(getconf CLK_TCK)"
}

for what in ocr empty idle; do
    : >"$work/$what.old"
    : >"$work/$what.new"
    for _ in $(seq 1 "$rounds"); do
        "${what}_run" "$OLD" >>"$work/$what.old"
        "${what}_run" "$NEW" >>"$work/$what.new"
    done
done
printf '%-52s %10s %10s %8s\n' "case (median of $rounds, alternated)" old new new/old
row() {
    local o n
    o=$(median <"$work/$2.old")
    n=$(median <"$work/$2.new")
    printf '%-52s %10.3f %10.3f %8.2f\n' "$1" "$o" "$n" "$(calc "$n / $o")"
}
row "ocr -j 2 --engine lstm, $n pages: seconds" ocr
row "1000 empty tasks, -c 2, null engine: seconds" empty
row "idle node, 5 s: master CPU seconds" idle
