#!/usr/bin/env bash
# rotate-pages and deskew (issue 19): pages of real text (bench/texts.sh, 25 lines a page,
# ORIENT_PAGES pages a language, 2 by default) in eng, san, tam and hin, clean and degraded
# (tools/degrade.sh), each turned 90/180/270 (vips rot) and tilted by -5, -2, +3, +5 and
# +10 degrees (vips rotate). Each page read by `ocrpool ocr` with rotate-pages and deskew
# on (the defaults) and off. Prints, per language and render, 1 - CER of the upright page,
# of the turned pages and of the tilted ones, before (off) and after (on); the share of
# pages whose orientation was found right (a tilted page's is 0), beside the osd model's
# (`tesseract --psm 0`, Debian's tesseract-ocr-osd) on the same turned pages; and the time
# each step adds to an upright page: the lines' axis, skew and deskew, and the band read
# to tell up from down (from the worker's debug log), against the page's time with both
# off. Concurrency 1, under the tests' lock, so that the times are one page's alone.
# ocrpool reads with the engine named by ENGINE (lstm, the default engine, unless set).
#   bench/orient.sh        (BUILD=build by default; ORIENT_PAGES=N; ENGINE=tesseract)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
N=${ORIENT_PAGES:-2}
OCRPOOL=$PWD/$BUILD/ocrpool
work=$BUILD/bench/orient
rm -rf "$work"
mkdir -p "$work/in" "$work/on" "$work/off" "$work/osd"
export OMP_THREAD_LIMIT=1
source tools/fonts.sh
source tools/degrade.sh
source bench/texts.sh
# As bench/lstm_pages.sh: san, tam and hin pages only of lines without Latin letters.
bench_texts "$work" $((N * 25 * 4))
for l in eng san tam hin; do
    if [ $l = eng ]; then head -$((N * 25)) "$work/$l.txt"; else
        awk -v n=$((N * 25)) '!/[A-Za-z]/ && k < n { print; k++ }' "$work/$l.txt"
    fi >"$work/$l.lines"
    split -l 25 -d "$work/$l.lines" "$work/in/$l-p"
done
for t in "$work"/in/*-p??; do
    l=$(basename "$t" | cut -d- -f1)
    pango-view --font="$(font_of "$l")" --dpi=300 --margin=120 --background=white \
        --foreground=black -q -o "$t-clean.png" "$t" 2>/dev/null
    degrade_page "$t-clean.png" "$t-degraded.png"
    for r in clean degraded; do
        src=$t-$r.png
        for d in 90 180 270; do vips rot "$src" "$t-$r-rot$d.png" d$d; done
        for a in m5 m2 3 5 10; do
            vips rotate --background 255 -- "$src" "$t-$r-skew$a.png" "${a/m/-}"
        done
    done
done
rm -f "$work"/in/*.v
# One language's pages both ways under one hold of the tests' lock (the times are then one
# page's alone, and on and off see the same machine); the osd model after, outside it.
read_both() {
    local l=$1
    for mode in on off; do
        args=()
        [ $mode = off ] && args=(--no-rotate-pages --no-deskew)
        "$OCRPOOL" ocr --engine "${ENGINE:-lstm}" -q -c 1 -l "$l" --format txt,json --log-level debug "${args[@]}" \
            -o "$work/$mode" "$work/in/$l"-p*.png 2>>"$work/$mode.log"
    done
}
export -f read_both
export OCRPOOL work
for l in eng san tam hin; do
    flock /tmp/ocrpool-test.lock bash -c "read_both $l"
    for f in "$work/in/$l"-p??-{clean,degraded}{,-rot90,-rot180,-rot270}.png; do
        tesseract "$f" - --psm 0 -l osd 2>/dev/null | sed -n 's/^Rotate: //p' >"$work/osd/$(basename "$f" .png).rot" || true
    done
done
python3 bench/orient_report.py "$work"
