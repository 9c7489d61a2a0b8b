#!/usr/bin/env bash
# The CUDA forward pass (src/gpu/cuda, issue 17) on lines of real text: lines of the four
# test texts rendered, cropped to the ink and scaled to the model's height in black and
# white (as the parity bench renders them), each also inverted, through
# build/tools/lstm_cuda parity: the CUDA path's outputs equal the CPU path's bit for bit, in
# batches of 1, 7 and 64 and under an 8 MB cap (split). Here the kernels run emulated on the
# CPU (LSTM_CUDA_EMULATE: the same bodies, walk and allocator); where there is a GPU, on it
# too, else that part is a skip with the reason (tests/run.sh counts it as skipped).
# And `ocrpool --version` says whether CUDA is built.
source "$(dirname "$0")/lib.sh"
TOOL=$(dirname "$OCRPOOL")/tools/lstm_cuda
TD=${TESSDATA_PREFIX:-/usr/share/tesseract-ocr/5/tessdata}
source "$here/../../tools/fonts.sh"

"$OCRPOOL" --version >"$TMP/version.txt"
check "--version says whether CUDA support is built" \
    grep -Eq '^ocrpool [0-9.]+ \((CUDA [0-9.]+ support built|built without CUDA)\)$' "$TMP/version.txt"
if grep -q 'built without CUDA' "$TMP/version.txt"; then
    skip "built without CUDA (the parity runs need the CUDA build)"
    finish
fi

for l in eng san tam hin; do
    h=36
    [ $l = hin ] && h=48
    n=0
    mkdir -p "$TMP/$l"
    while IFS= read -r text; do
        [ -n "$text" ] || continue
        n=$((n + 1))
        [ $n -le "${CUDA_LINES:-6}" ] || break
        pango-view --font="$(font_of $l)" --dpi=300 --margin=8 --background=white \
            --foreground=black -q -o "$TMP/r.png" --text "$text" 2>/dev/null
        vips colourspace "$TMP/r.png" "$TMP/g0.v" b-w
        read -r left top width height < <(vips find_trim "$TMP/g0.v" --background 255 | tr '\n' ' ')
        vips crop "$TMP/g0.v" "$TMP/g.v" "$left" "$top" "$width" "$height"
        vips resize "$TMP/g.v" "$TMP/s.v" "$(python3 -c "print($h / $height)")" --kernel lanczos3
        vips relational_const "$TMP/s.v" "$TMP/t.v" more 128
        vips cast "$TMP/t.v" "$TMP/$l/$n.png" uchar
    done <"$here/../data/text/$l.txt"
    LSTM_CUDA_EMULATE=1 "$TOOL" parity "$TD/$l.traineddata" "$TMP/$l"/*.png >"$TMP/emu-$l.txt" 2>&1
    sed 's/^/# /' "$TMP/emu-$l.txt"
    n=$(ls "$TMP/$l" | wc -l)
    check "$l: the CUDA path (emulated) equals the CPU's on $n lines and their inverses" \
        grep -q "^parity $l.traineddata: PASS" "$TMP/emu-$l.txt"
    "$TOOL" parity "$TD/$l.traineddata" "$TMP/$l"/*.png >"$TMP/gpu-$l.txt" 2>&1
    rc=$?
    if [ $rc -eq 77 ]; then
        skip "$l: the CUDA path on the GPU: $(head -1 "$TMP/gpu-$l.txt")"
    else
        sed 's/^/# /' "$TMP/gpu-$l.txt"
        check "$l: the CUDA path on the GPU equals the CPU's (exit $rc)" \
            grep -q "^parity $l.traineddata: PASS" "$TMP/gpu-$l.txt"
    fi
done
finish
