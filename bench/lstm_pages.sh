#!/usr/bin/env bash
# Page-level parity of our recognizer (issue 7, figure 3): `ocrpool ocr --engine lstm`
# against `--engine tesseract` (libtesseract 5.3.0, its dictionaries on) on the same
# pages, clean, degraded (blurred, with grain) and in colour (purple on beige), per
# language. The pages are real text (bench/texts.sh: LSTM_PAGE_LINES lines a language,
# 100 by default, 25 to a page; for san, tam and hin a second set without Latin letters)
# rendered at 300 dpi in the fonts of the tests; both engines lay them out with
# Tesseract. Per language, text and render: the share of identical lines (the two
# outputs' non-empty lines aligned in order), the CER between the two engines, and each
# engine's CER against the text rendered.
#   bench/lstm_pages.sh        (BUILD=build by default)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
N=${LSTM_PAGE_LINES:-100}
OCRPOOL=$PWD/$BUILD/ocrpool
work=$BUILD/bench/pages
rm -rf "$work"
mkdir -p "$work/in" "$work/lstm" "$work/tesseract"
export OMP_THREAD_LIMIT=1
source tools/fonts.sh
source tools/degrade.sh
source bench/texts.sh
bench_texts "$work" "$N"
# The catalogues' lines carry untranslated English (which the san, tam and hin models read
# as their own script: garbage, and fragile): a second set of pages for those three has
# only lines without Latin letters.
mkdir -p "$work/more"
bench_texts "$work/more" $((N * 4))
for l in san tam hin; do
    awk -v n="$N" '!/[A-Za-z]/ && k < n { print; k++ }' "$work/more/$l.txt" >"$work/$l-native.txt"
done

for l in eng san tam hin; do
    split -l 25 -d "$work/$l.txt" "$work/in/$l-p"
    [ "$l" = eng ] || split -l 25 -d "$work/$l-native.txt" "$work/in/$l-n"
    for t in "$work/in/$l"-[pn]??; do
        pango-view --font="$(font_of "$l")" --dpi=300 --margin=120 --background=white \
            --foreground=black -q -o "$t-clean.png" "$t" 2>/dev/null
        degrade_page "$t-clean.png" "$t-degraded.png"
        pango-view --font="$(font_of "$l")" --dpi=300 --margin=120 --background='#f0e0c0' \
            --foreground='#402080' -q -o "$t-colour.png" "$t" 2>/dev/null
    done
done
for e in lstm tesseract; do
    for l in eng san tam hin; do
        "$OCRPOOL" ocr -q -j "$(nproc)" --engine "$e" -l "$l" -o "$work/$e" "$work/in/$l"-[pn]*.png
    done
done
python3 bench/page_parity.py "$work"
