#!/usr/bin/env bash
# The longer parity run of our recognizer against libtesseract 5.3.0 (issue 7;
# tests/integration/test_lstm.sh runs the same on 15 lines): N lines a language
# (LSTM_PARITY_LINES, 100 by default) of real text (bench/texts.sh).
# Each line is rendered, cropped to its ink and scaled to the model's height in
# black and white, so both sides see the same pixels, then:
#   exact    our network outputs equal libtesseract's at every step (1e-5)
#   no dict  our beam search = libtesseract's, dictionaries removed from both
#   greedy   our greedy best path = libtesseract's without dictionaries
#   dict     our beam search with the dictionaries = stock libtesseract
# The text figures count the lines whose outputs are exact (a line whose box
# libtesseract cut differently says nothing of the decoder); the last column
# is "no dict" over every line.
#   bench/lstm_parity.sh        (BUILD=build by default)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
N=${LSTM_PARITY_LINES:-100}
LINE=$PWD/$BUILD/tools/lstm_line
TESS=$PWD/$BUILD/tools/tess_timesteps
TD=${TESSDATA_PREFIX:-/usr/share/tesseract-ocr/5/tessdata}
work=$BUILD/bench/parity
rm -rf "$work"
mkdir -p "$work/nodict"
export OMP_THREAD_LIMIT=1
source tools/fonts.sh

for l in eng san tam hin; do
    (cd "$work/nodict" && combine_tessdata -u "$TD/$l.traineddata" "$l." >/dev/null 2>&1 &&
        rm -f "$l".lstm-*-dawg && combine_tessdata "$l." >/dev/null 2>&1 && rm -f "$l".lstm* "$l".version)
done

source bench/texts.sh
bench_texts "$work" "$N"

one() { # one LANG I TEXT: prints exact, nodict, greedy, dict (1/0) for one line
    local l=$1 i=$2 text=$3 d=$work/$1-$2 h=36
    [ "$l" = hin ] && h=48
    mkdir -p "$d"
    pango-view --font="$(font_of "$l")" --dpi=300 --margin=8 --background=white \
        --foreground=black -q -o "$d/r.png" --text "$text" 2>/dev/null || return 0
    vips colourspace "$d/r.png" "$d/g0.v" b-w
    read -r left top width height < <(vips find_trim "$d/g0.v" --background 255 | tr '\n' ' ')
    [ "${height:-0}" -gt 4 ] || return 0
    vips crop "$d/g0.v" "$d/g.v" "$left" "$top" "$width" "$height"
    vips resize "$d/g.v" "$d/s.v" "$(awk "BEGIN { print $h / $height }")" --kernel lanczos3
    vips relational_const "$d/s.v" "$d/t.v" more 128
    vips cast "$d/t.v" "$d/bw.png" uchar
    "$TESS" "$d/bw.png" "$l" "$TD" >"$d/ts.txt" 2>/dev/null
    local exact=1
    "$LINE" "$TD/$l.traineddata" "$d/bw.png" "$d/ts.txt" >"$d/ours.txt" 2>/dev/null || exact=0
    local nd wd
    nd=$(tesseract "$d/bw.png" - --psm 13 -l "$l" --tessdata-dir "$work/nodict" 2>/dev/null | head -1)
    wd=$(tesseract "$d/bw.png" - --psm 13 -l "$l" --tessdata-dir "$TD" 2>/dev/null | head -1)
    mapfile -t o <"$d/ours.txt"
    echo "$exact $([ "${o[0]}" = "$nd" ] && echo 1 || echo 0) $([ "${o[2]}" = "$nd" ] && echo 1 || echo 0) $([ "${o[1]}" = "$wd" ] && echo 1 || echo 0)"
    rm -f "$d"/*.v "$d/r.png"
}
export -f one font_of
export work TD LINE TESS

printf '%-5s %6s %10s %10s %10s %10s %10s\n' lang lines exact "no dict" greedy dict "no dict*"
for l in eng san tam hin; do
    nl -w1 -s$'\t' "$work/$l.txt" | while IFS=$'\t' read -r i t; do printf '%s\0%s\0%s\0' "$l" "$i" "$t"; done |
        xargs -0 -n3 -P"$(nproc)" bash -c 'one "$0" "$1" "$2"' >"$work/$l.res"
    awk -v l=$l '{ n++; e += $1; all += $2; if ($1) { k++; a += $2; g += $3; d += $4 } }
        END { printf "%-5s %6d %5d %3.0f%% %5d %3.0f%% %5d %3.0f%% %5d %3.0f%% %5d %3.0f%%\n", l, n, e,
                     n ? 100 * e / n : 0, a, k ? 100 * a / k : 0, g, k ? 100 * g / k : 0, d,
                     k ? 100 * d / k : 0, all, n ? 100 * all / n : 0 }' "$work/$l.res"
done
