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

page() { # page LANG FONT OUT: an A4 300 dpi page of LANG's text, repeated to fill it
    local lang=$1 font=$2 out=$3
    [ -f "$out" ] && return
    # Paragraphs of the test text, wrapped to the text width (2080 px: pango-view takes points,
    # 499 pt at 300 dpi), as on a book page.
    for _ in $(seq 1 14); do tr "\n" " " <"tests/data/text/$lang.txt"; printf "\n\n"; done >"$work/$lang.fill.txt"
    pango-view --font="$font" --dpi=300 --margin=0 --width=499 --wrap=word --background=white \
        --foreground=black -q -o "$work/$lang.body.png" "$work/$lang.fill.txt"
    vips colourspace "$work/$lang.body.png" "$work/$lang.grey.v" b-w
    # (pango's 499 pt come out a pixel or two under 2080 px: the crop takes what there is)
    local w h
    w=$(vipsheader -f width "$work/$lang.grey.v")
    h=$(vipsheader -f height "$work/$lang.grey.v")
    vips crop "$work/$lang.grey.v" "$work/$lang.crop.v" 0 0 $((w < 2080 ? w : 2080)) $((h < 3100 ? h : 3100))
    vips embed "$work/$lang.crop.v" "$out" 200 200 2480 3508 --extend white
    rm -f "$work/$lang".*.v "$work/$lang.body.png"
}
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
