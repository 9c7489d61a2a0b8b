#!/usr/bin/env bash
# Benchmarks of the worker pool (not part of `make test`), each beside its peer
# in the same run:
#  1. 20 A4 300 dpi pages at -c 2: ocrpool ocr -j 2 against the tesseract CLI
#     through xargs -P2 (OMP_THREAD_LIMIT=1), and against the engine limit (the
#     sum of single-process page times / 2); with sampled total RSS and PSS.
#  2. Empty-task throughput through the SQLite queue at -c 2 (the null engine).
#  3. PSS of the first and the second worker once the model is loaded.
# ocrpool reads with the engine named by ENGINE (lstm, the default engine, unless set).
#   bench/pool.sh        (BUILD=build by default; ENGINE=tesseract for that engine)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OCRPOOL=$PWD/$BUILD/ocrpool
work=$BUILD/bench
mkdir -p "$work"
export OMP_THREAD_LIMIT=1
[ -f "$work/eng-a4.png" ] || { echo "run bench/run.sh first (it renders the pages)"; exit 1; }
calc() { awk "BEGIN { print $1 }"; }
lang=san+eng
engine=${ENGINE:-lstm}
rm -rf "$work/pages" "$work/out"
mkdir -p "$work/pages"
for i in $(seq -w 1 10); do
    cp "$work/eng-a4.png" "$work/pages/e$i.png"
    cp "$work/san-a4.png" "$work/pages/s$i.png"
done
n=$(ls "$work/pages" | wc -l)

echo "# 1. $n A4 300 dpi pages (English and Sanskrit), -l $lang, 2 at a time; ocrpool --engine $engine"
read -r cw crss cpss cone _ < <(python3 bench/memsample.py -- sh -c \
    "ls $work/pages/*.png | xargs -P2 -I{} tesseract {} - -l $lang >/dev/null 2>&1")
read -r ow orss opss oone _ < <(python3 bench/memsample.py -- "$OCRPOOL" ocr --engine "$engine" -q -j 2 -l $lang \
    --max-image-size 0 -o "$work/out" "$work"/pages/*.png)
rm -rf "$work/out"
read -r rw rrss rpss rone _ < <(python3 bench/memsample.py -- "$OCRPOOL" ocr --engine "$engine" -q -j 2 -l $lang \
    -o "$work/out" "$work"/pages/*.png)
# The engine limit: each page alone in one process, model load excluded, halved.
rm -rf "$work/out1"
"$OCRPOOL" ocr --engine "$engine" -v -j 1 -l $lang --max-image-size 0 -o "$work/out1" "$work"/pages/*.png 2>"$work/v.log"
sum=$(sed -n 's/.* lines, \([0-9.]*\) s, .*/\1/p' "$work/v.log" | awk '{s += $1} END {print s}')
limit=$(calc "$n / ($sum / 2)")
printf '%-44s %8s %10s %10s %12s\n' case pages/s "RSS MB" "PSS MB" "1 proc MB"
printf '%-44s %8.3f %10s %10s %12s\n' "tesseract CLI, xargs -P2" "$(calc "$n / $cw")" "$crss" "$cpss" "$cone"
printf '%-44s %8.3f %10s %10s %12s  x%.2f of the CLI\n' "ocrpool ocr -j 2, no resize" "$(calc "$n / $ow")" "$orss" "$opss" "$oone" "$(calc "$cw / $ow")"
printf '%-44s %8.3f %10s %10s %12s  x%.2f of the CLI\n' "ocrpool ocr -j 2, max-image-size 2048" "$(calc "$n / $rw")" "$rrss" "$rpss" "$rone" "$(calc "$cw / $rw")"
printf '%-44s %8.3f   (sum of page times %.1f s / 2)\n' "engine limit" "$limit" "$sum"

echo
echo "# 2. empty tasks through the SQLite queue, -c 2, the null engine"
q="sqlite://$PWD/$work/empty.db"
rm -f "$work"/empty.db*
m=2000
t0=$(date +%s.%N)
for _ in $(seq 1 $((m / 100))); do
    "$OCRPOOL" submit --broker "$q" $(for _ in $(seq 1 100); do echo "$work/eng-a4.png"; done) >/dev/null
done
t1=$(date +%s.%N)
"$OCRPOOL" worker --broker "$q" --engine null -c 2 --log-level warn &
wp=$!
while ! "$OCRPOOL" status --broker "$q" | grep >/dev/null "^all groups: 0 queued, 0 running"; do sleep 0.2; done
kill -TERM $wp
wait $wp || true
span=$(python3 -c "
import sqlite3; c = sqlite3.connect('$work/empty.db')
a, b = c.execute('select min(started), max(finished) from tasks').fetchone(); print(b - a)")
printf 'submit: %d tasks in %.2f s (%.0f tasks/s, headers read)\n' $m "$(calc "$t1 - $t0")" "$(calc "$m / ($t1 - $t0)")"
printf 'pool:   %d tasks in %.2f s (%.0f tasks/s, %.2f ms per task)\n' $m "$span" "$(calc "$m / $span")" "$(calc "$span * 1000 / $m")"

echo
echo "# 3. what sharing the model saves: --engine $engine -l $lang, two workers after loading"
q="sqlite://$PWD/$work/share.db"
rm -f "$work"/share.db*
"$OCRPOOL" worker --broker "$q" --engine "$engine" -c 2 -l $lang --log-level info 2>"$work/share.log" &
wp=$!
for _ in $(seq 1 100); do [ "$(grep -c ' ready: RSS' "$work/share.log")" -ge 2 ] && break; sleep 0.1; done
sleep 0.5
zpid=$(grep -m1 'zygote ready' "$work/share.log" | awk '{print $2}')
printf '%-12s %8s %8s %12s\n' process "RSS MB" "PSS MB" "shared MB"
for p in $zpid $(grep -o 'worker [0-9]* ready' "$work/share.log" | awk '{print $2}'); do
    awk -v p="$p" '/^Rss:/ {r=$2} /^Pss:/ {s=$2} /^Shared_(Clean|Dirty)/ {sh+=$2}
        END {printf "%-12s %8.1f %8.1f %12.1f\n", p, r/1024, s/1024, sh/1024}' /proc/$p/smaps_rollup
done
kill -TERM $wp
wait $wp || true
