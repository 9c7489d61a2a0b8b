#!/usr/bin/env bash
# Benchmarks ocrpool against the tesseract CLI (the peer a user would run
# instead), in the same run, on A4 pages at 300 dpi rendered with Noto
# fonts: seconds per page and peak RSS for one page, then a sequential run
# over several pages. Prints a table with ratios; not part of `make test`.
# ocrpool runs with the engine named by ENGINE (lstm, the default engine, unless set).
#   bench/run.sh [repeats]        (BUILD=build by default; ENGINE=tesseract for that engine)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OCRPOOL=$PWD/$BUILD/ocrpool
reps=${1:-3}
engine=${ENGINE:-lstm}
work=$BUILD/bench
mkdir -p "$work"

. bench/a4_page.sh
page eng "Noto Serif 11" "$work/eng-a4.png"
page san "Noto Serif Devanagari 11" "$work/san-a4.png"

calc() { awk "BEGIN { print $1 }"; }

# median of the numbers on stdin
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# measure NAME CMD...: repeats CMD, prints median seconds and median peak RSS (KiB)
measure() {
    local name=$1 t r
    shift
    : >"$work/m.t"
    : >"$work/m.r"
    for _ in $(seq 1 "$reps"); do
        /usr/bin/time -f '%e %M' -o "$work/m.time" "$@" >/dev/null 2>&1
        read -r t r <"$work/m.time"
        echo "$t" >>"$work/m.t"
        echo "$r" >>"$work/m.r"
    done
    printf '%s %s %s\n' "$name" "$(median <"$work/m.t")" "$(median <"$work/m.r")"
}

echo "# one A4 300 dpi page, median of $reps runs, one thread (OMP_THREAD_LIMIT=1)"
echo "# (ocrpool --engine $engine: the whole run, one worker; peak KiB: the largest process, as /usr/bin/time reports)"
printf '%-34s %8s %10s %8s %8s\n' case s/page "peak KiB" "s ratio" "RSS ratio"
export OMP_THREAD_LIMIT=1
for l in eng san; do
    read -r _ ct cr < <(measure cli tesseract "$work/$l-a4.png" - -l "$l")
    printf '%-34s %8s %10s %8s %8s\n' "tesseract CLI $l" "$ct" "$cr" 1.00 1.00
    for size in 0 2048; do
        read -r _ ot orr < <(measure ours "$OCRPOOL" ocr --engine "$engine" -j 1 -l "$l" --max-image-size $size "$work/$l-a4.png")
        printf '%-34s %8s %10s %8.2f %8.2f\n' "ocrpool $l max-image-size $size" "$ot" "$orr" \
            "$(calc "$ot / $ct")" "$(calc "$orr / $cr")"
    done
done

n=8
echo
echo "# $n pages in a row (eng and san alternating), one ocrpool worker (-j 1, --engine $engine) vs one CLI call per page"
files=()
mkdir -p "$work/seq"
for i in $(seq 1 $n); do
    # Distinct files: the same file twice is one task for ocrpool (a task per page).
    if [ $((i % 2)) -eq 1 ]; then cp "$work/eng-a4.png" "$work/seq/$i.png"; else cp "$work/san-a4.png" "$work/seq/$i.png"; fi
    files+=("$work/seq/$i.png")
done
s0=$(date +%s.%N)
for f in "${files[@]}"; do tesseract "$f" - -l san+eng >/dev/null 2>&1; done
s1=$(date +%s.%N)
"$OCRPOOL" ocr --engine "$engine" -q -j 1 -l san+eng --max-image-size 0 "${files[@]}" >/dev/null
s2=$(date +%s.%N)
"$OCRPOOL" ocr --engine "$engine" -q -j 1 -l san+eng "${files[@]}" >/dev/null
s3=$(date +%s.%N)
cli=$(calc "$n / ($s1 - $s0)")
o0=$(calc "$n / ($s2 - $s1)")
o2=$(calc "$n / ($s3 - $s2)")
printf '%-34s %8.3f pages/s\n' "tesseract CLI per page" "$cli"
printf '%-34s %8.3f pages/s  (x%.2f)\n' "ocrpool, no resize" "$o0" "$(calc "$o0 / $cli")"
printf '%-34s %8.3f pages/s  (x%.2f)\n' "ocrpool, max-image-size 2048" "$o2" "$(calc "$o2 / $cli")"
