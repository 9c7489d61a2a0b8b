#!/usr/bin/env bash
# Fewer forward passes with several languages (issue 18): `ocrpool ocr --engine lstm` reads a
# page's first lines with every model in the user's order, then each line with the model that
# won the page's lines most like it first (src/engine/engine_lstm.c, read_all). Pages of real
# text (bench/texts.sh; Devanagari lines: the Marathi catalogue's, without Latin letters),
# 36 lines each, 300 dpi, rendered by pango-view as bench/lstm.sh's pages are:
#   eng        English only            san        Devanagari only
#   mix-blocks 9 Devanagari lines, 9 English, 9 Devanagari, 9 English (blocks apart)
#   mix-alt    Devanagari and English lines taking turns
#   mix-eng    English, with two blocks of 3 Devanagari lines (a quotation)
# each read with -l san+eng and -l eng+san, -j 1, one page a command, MODELS_REPS times (2),
# before (MODELS_BASE: an ocrpool of the code before, optional) and after ($BUILD/ocrpool)
# taking turns. Per page, languages and build: the lines each model read (the engine's debug
# log: "lines read per model"; a build before it counts them only when patched to log
# "lstm: base: MODEL read N line(s)"), seconds (the mean of the runs) and 1 - CER against the
# text rendered (tools/cer.py); and whether the text is the same as before's.
#   bench/models.sh        (BUILD=build by default; MODELS_BASE=path/to/ocrpool; MODELS_REPS=N)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
REPS=${MODELS_REPS:-2}
OCRPOOL=$PWD/$BUILD/ocrpool
BASE=${MODELS_BASE:-}
work=$BUILD/bench/models
rm -rf "$work"
mkdir -p "$work/in" "$work/out"
export OMP_THREAD_LIMIT=1
source bench/texts.sh
bench_texts "$work" 200
grep -v '^ *$' "$work/eng.txt" | head -40 >"$work/e.lines"
awk '!/[A-Za-z]/ && k < 40 { print; k++ }' "$work/san.txt" >"$work/s.lines"
e() { sed -n "$1,$2p" "$work/e.lines"; }
s() { sed -n "$1,$2p" "$work/s.lines"; }
e 1 36 >"$work/in/eng.txt"
s 1 36 >"$work/in/san.txt"
{ s 1 9; echo; e 1 9; echo; s 10 18; echo; e 10 18; } >"$work/in/mix-blocks.txt"
paste -d '\n' <(s 1 18) <(e 1 18) >"$work/in/mix-alt.txt"
{ e 1 12; echo; s 1 3; echo; e 13 24; echo; s 4 6; echo; e 25 30; } >"$work/in/mix-eng.txt"
pages="eng san mix-blocks mix-alt mix-eng"
for p in $pages; do
    # Latin letters in Noto Serif, Devanagari in Noto Serif Devanagari (the tests' fonts).
    pango-view --font="Noto Serif,Noto Serif Devanagari 12" --dpi=300 --margin=120 \
        --background=white --foreground=black -q -o "$work/in/$p.png" "$work/in/$p.txt" 2>/dev/null
done

# run NAME BINARY PAGE LANGS: one command; appends "passes seconds" to $work/NAME-PAGE-LANGS.
run() {
    local name=$1 bin=$2 p=$3 langs=$4 out=$work/out/$1-$3-$4
    local t0 t1
    t0=$(date +%s.%N)
    "$bin" ocr -j 1 --engine lstm -l "$langs" --log-level debug "$work/in/$p.png" \
        >"$out.txt" 2>"$out.log"
    t1=$(date +%s.%N)
    # Lines read per model: the after build's summary lines, or the patched before build's.
    local passes
    passes=$(awk '/lines read per model:/ { sub(/.*lines read per model: */, "");
                     for (i = 1; i < NF; i += 2) n[$i] += $(i + 1); found = 1 }
                  /lstm: base: / { for (i = 1; i <= NF; i++) if ($i == "base:") n[$(i + 1)] += $(i + 3); found = 1 }
                  END { if (!found) { print "-"; exit } s = ""; t = 0
                        for (m in n) { s = s (s ? "," : "") m "=" n[m]; t += n[m] } print t "(" s ")" }' "$out.log")
    echo "$passes $(awk "BEGIN { print $t1 - $t0 }")" >>"$work/$name-$p-$langs.runs"
}
builds="after"
[ -n "$BASE" ] && builds="before after"
for _ in $(seq "$REPS"); do
    for p in $pages; do
        for langs in san+eng eng+san; do
            for b in $builds; do
                if [ $b = before ]; then run before "$BASE" "$p" "$langs"; else run after "$OCRPOOL" "$p" "$langs"; fi
            done
        done
    done
done

echo "# $REPS run(s) a case, -j 1, one page a command; passes: lines read per model (all of a page's"
echo "# forward passes, the orientation check's line included), seconds: mean, 1-CER against the text"
printf '%-11s %-8s %-7s %-28s %7s %7s %s\n' page langs build passes seconds 1-CER same-as-before
for p in $pages; do
    for langs in san+eng eng+san; do
        for b in $builds; do
            f=$work/$b-$p-$langs
            passes=$(awk 'NR == 1 { print $1 }' "$f.runs")
            secs=$(awk '{ s += $2 } END { printf "%.2f", s / NR }' "$f.runs")
            acc=$(python3 tools/cer.py "$work/in/$p.txt" "$work/out/$b-$p-$langs.txt" |
                awk '{ printf "%.2f %%", (1 - $1) * 100 }')
            same=""
            if [ $b = after ] && [ -n "$BASE" ]; then
                same=$(python3 tools/cer.py --lines "$work/out/before-$p-$langs.txt" "$work/out/after-$p-$langs.txt")
            fi
            printf '%-11s %-8s %-7s %-28s %7s %7s %s\n' "$p" "$langs" "$b" "$passes" "$secs" "$acc" "$same"
        done
    done
done
