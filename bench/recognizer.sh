#!/usr/bin/env bash
# Benchmark of the shared recognizer (issue 16; not part of `make test`): the same A4
# pages through `--engine lstm` with `--recognizer worker` (each worker runs the network)
# and `--recognizer shared` (one recognizer process batches every worker's lines), at -c 2
# and -c 4, OMP_THREAD_LIMIT=1: pages/s, the peak total RSS and PSS of the run's process
# tree (bench/memsample.py), and, for shared, the recognizer's lines, batches and mean
# batch size, and the batches that held lines of more than one worker (from its last
# figures, which the node logs when it stops).
#   bench/recognizer.sh [PAGES_PER_LANGUAGE]        (BUILD=build by default; 4)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OCRPOOL=$PWD/$BUILD/ocrpool
work=$BUILD/bench
per=${1:-4}
mkdir -p "$work"
export OMP_THREAD_LIMIT=1
. bench/a4_page.sh
page eng "Noto Serif 11" "$work/eng-a4.png"
page san "Noto Serif Devanagari 11" "$work/san-a4.png"
rm -rf "$work/rpages"
mkdir -p "$work/rpages"
for i in $(seq 1 "$per"); do
    cp "$work/eng-a4.png" "$work/rpages/e$i.png"
    cp "$work/san-a4.png" "$work/rpages/s$i.png"
done
n=$(ls "$work/rpages" | wc -l)
calc() { awk "BEGIN { print $1 }"; }
echo "# $n A4 300 dpi pages (English, Sanskrit), --engine lstm -l san+eng, max-image-size 2048"
printf '%-24s %8s %8s %10s %10s  %s\n' case seconds pages/s "RSS MB" "PSS MB" "recognizer"
for c in 2 4; do
    for mode in worker shared; do
        rm -rf "$work/rout"
        read -r t rss pss _ _ < <(python3 bench/memsample.py -- "$OCRPOOL" ocr -q -j $c \
            --engine lstm -l san+eng --recognizer $mode --log-level info -o "$work/rout" \
            "$work"/rpages/*.png 2>"$work/r-$mode-$c.log")
        what=
        if [ $mode = shared ]; then
            # "recognizer 0 ends: L lines in B batches (M of lines of more than one worker), ..."
            read -r lines batches multi busy < <(sed -n 's/.*recognizer 0 ends: \([0-9]*\) lines in \([0-9]*\) batches (\([0-9]*\) of.*), \([0-9.]*\) s in the network.*/\1 \2 \3 \4/p' \
                "$work/r-$mode-$c.log" | tail -1) || true
            [ -n "${batches:-}" ] && [ "$batches" -gt 0 ] &&
                what="$lines lines, $batches batches (mean $(calc "$lines / $batches") lines), $multi with lines of more than one worker; network busy $busy s"
        fi
        printf '%-24s %8.2f %8.3f %10s %10s  %s\n' "-c $c $mode" "$t" "$(calc "$n / $t")" "$rss" "$pss" "$what"
        cp -r "$work/rout" "$work/rout-$mode-$c"
    done
    if diff -qr -x '.ocrpool-queue.db*' "$work/rout-worker-$c" "$work/rout-shared-$c" >/dev/null; then
        echo "# -c $c: shared and worker gave the same text on every page"
    else
        echo "# -c $c: shared and worker DIFFER"
    fi
    rm -rf "$work/rout-worker-$c" "$work/rout-shared-$c"
done
