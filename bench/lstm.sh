#!/usr/bin/env bash
# Benchmark of our own recognizer (not part of `make test`): the same A4
# pages through `--engine lstm` and `--engine tesseract`, one process (-j 1)
# and two (-j 2), OMP_THREAD_LIMIT=1: pages/s and the ratio; then the longer
# parity runs (bench/lstm_parity.sh: 100 lines a language; bench/lstm_pages.sh:
# 4 pages a language, clean, degraded and in colour, against --engine tesseract).
#   bench/lstm.sh        (BUILD=build by default)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OCRPOOL=$PWD/$BUILD/ocrpool
work=$BUILD/bench
[ -f "$work/eng-a4.png" ] || { echo "run bench/run.sh first (it renders the pages)"; exit 1; }
export OMP_THREAD_LIMIT=1
mkdir -p "$work/lpages"
for i in 1 2 3 4; do
    cp "$work/eng-a4.png" "$work/lpages/e$i.png"
    cp "$work/san-a4.png" "$work/lpages/s$i.png"
done
n=$(ls "$work/lpages" | wc -l)
calc() { awk "BEGIN { print $1 }"; }
echo "# $n A4 300 dpi pages (English, Sanskrit), -l san+eng, max-image-size 2048"
printf '%-36s %8s %8s\n' case seconds pages/s
for j in 1 2; do
    for e in tesseract lstm; do
        rm -rf "$work/lout"
        s=$(date +%s.%N)
        "$OCRPOOL" ocr -q -j $j --engine $e -l san+eng -o "$work/lout" "$work"/lpages/*.png
        t=$(calc "$(date +%s.%N) - $s")
        eval "t_${e}_$j=$t"
        printf '%-36s %8.2f %8.3f\n' "--engine $e -j $j" "$t" "$(calc "$n / $t")"
    done
    printf '%-36s %8s x%.2f\n' "lstm / tesseract speed, -j $j" "" "$(calc "$(eval echo \$t_tesseract_$j) / $(eval echo \$t_lstm_$j)")"
done

echo
echo "# parity with libtesseract, lines of real text (bench/lstm_parity.sh)"
BUILD=$BUILD bench/lstm_parity.sh

echo
echo "# parity with --engine tesseract, whole pages (bench/lstm_pages.sh)"
BUILD=$BUILD bench/lstm_pages.sh
