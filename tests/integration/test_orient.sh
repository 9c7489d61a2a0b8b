#!/usr/bin/env bash
# rotate-pages and deskew (issue 19): pages turned 90/180/270 read as the upright page, in
# English, Sanskrit and Tamil; tilted pages read as the straight one; boxes in the original
# page's pixels (the known line positions of lines.png, turned and tilted); the rotation in
# JSON, hOCR and ALTO; rotate-pages off leaves a turned page as it is; a blank page keeps 0.
source "$(dirname "$0")/lib.sh"
F=$FIXTURES

# read LANG OUT FILES...: OCRs FILES into OUT (txt, json, hocr, alto) with the defaults
# (rotate-pages and deskew on); extra settings in ORIENT_ARGS.
read_pages() {
    local lang=$1 out=$2
    shift 2
    "$OCRPOOL" ocr -l "$lang" --format txt,json,hocr,alto ${ORIENT_ARGS:-} -o "$out" "$@"
}

# field JSON KEY: a top-level value of a page's JSON.
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# within_point REF HYP UPRIGHT: HYP's CER against the text REF is within 1 point (0.01) of
# the upright page's (UPRIGHT's).
within_point() {
    local a b
    a=$(cer "$1" "$3") && b=$(cer "$1" "$2") || return 1
    echo "# CER $(basename "$2"): $b, upright $(basename "$3"): $a"
    python3 -c "import sys; sys.exit(0 if float('$b') <= float('$a') + 0.01 else 1)"
}

# --- turned pages, three scripts ---------------------------------------------------------
for l in eng san tam; do
    if read_pages $l "$TMP/$l" "$F/$l.png" "$F/$l-rot90.png" "$F/$l-rot180.png" "$F/$l-rot270.png"; then
        check "$l upright: rotation 0" test "$(field "$TMP/$l/$l.json" rotation)" = 0
        for d in 90 180 270; do
            # Turned d clockwise: read after a further turn of 360 - d.
            want=$(((360 - d) % 360))
            check "$l turned $d: rotation $want" test "$(field "$TMP/$l/$l-rot$d.json" rotation)" = $want
            check "$l turned $d: within 1 point of the upright page" \
                within_point "$here/../data/text/$l.txt" "$TMP/$l/$l-rot$d.txt" "$TMP/$l/$l.txt"
        done
    else
        not_ok "$l: ocrpool failed on the turned pages"
    fi
done

# --- an upright page costs one reading of one line, with either engine ----------------------
# The worker's debug line says what was read: "band of 1 line(s) read at C as it stood, -1.0
# turned" when the line as it stood was sure (no second reading).
for e in lstm tesseract; do
    for l in eng san tam hin; do
        if "$OCRPOOL" ocr -l $l --engine $e --log-level debug --format txt -o "$TMP/one-$e" \
            "$F/$l.png" 2>"$TMP/one-$e-$l.log"; then
            line=$(grep -o 'band of .* turned; turned [0-9]*' "$TMP/one-$e-$l.log")
            echo "# $e $l: $line"
            check "$e: $l upright: one line read once, not turned" \
                grep -q 'band of 1 line(s) read at [0-9.]* as it stood, -1.0 turned; turned 0$' <<<"$line"
        else
            not_ok "$e: $l upright: ocrpool failed"
        fi
    done
done

# --- a grey, grainy scan: up and down told from one line ----------------------------------
# Ground at about 190 with grain (tools/degrade.sh, then darkened): the band of the middle line
# once had white margins, the layout's threshold fell between them and the grey ground, and the
# line read as nothing; then a doubtful reading turned made upright pages upside down.
source "$here/../../tools/degrade.sh"
for l in eng san; do
    degrade_page "$F/$l.png" "$TMP/grain-$l.png"
    vips linear "$TMP/grain-$l.png" "$TMP/grey-$l.v" 0.75 0
    vips cast "$TMP/grey-$l.v" "$TMP/grey-$l.png" uchar
    vips rot "$TMP/grey-$l.png" "$TMP/grey-$l-rot180.png" d180
    if "$OCRPOOL" ocr -l $l --log-level debug --format txt,json -o "$TMP/grey-$l" \
        "$TMP/grey-$l.png" "$TMP/grey-$l-rot180.png" 2>"$TMP/grey-$l.log"; then
        grep -o 'band of .* turned; turned [0-9]*' "$TMP/grey-$l.log" | sed 's/^/# grey scan: /'
        check "grey scan $l upright: read on one line, sure, not turned" \
            test "$(grep -c 'band of 1 line(s) read at [89][0-9.]* as it stood, -1.0 turned; turned 0,' "$TMP/grey-$l.log")" -ge 1
        check "grey scan $l upright: rotation 0" test "$(field "$TMP/grey-$l/grey-$l.json" rotation)" = 0
        check "grey scan $l upside down: rotation 180" test "$(field "$TMP/grey-$l/grey-$l-rot180.json" rotation)" = 180
        check "grey scan $l upside down: within 1 point of the upright page" \
            within_point "$here/../data/text/$l.txt" "$TMP/grey-$l/grey-$l-rot180.txt" "$TMP/grey-$l/grey-$l.txt"
    else
        not_ok "grey scan $l: ocrpool failed"
    fi
done

# --- lines that all hold the same text -------------------------------------------------------
# bench/bigpdf.py's page (a 12 inch one: 15 lines, cut at the right edge): their letters line
# up in columns as sharp as the rows, and the ink alone takes them for vertical lines. Our
# recognizer reads the page turned a quarter as nothing sure, the page as it stood at once.
python3 "$here/../../bench/bigpdf.py" "$TMP/same.pdf" 12
if "$OCRPOOL" ocr -l eng --format txt,json -o "$TMP/same" "$TMP/same.pdf"; then
    check "lines of the same text: read as they stand (rotation 0)" test "$(field "$TMP/same/same.json" rotation)" = 0
    check "lines of the same text: their text read" grep -q "quick brown fox jumps over the lazy" "$TMP/same/same.txt"
else
    not_ok "ocrpool failed on a page of lines of the same text"
fi

# --- the rotation in the renderings, and the page's own size ------------------------------
check "rotation in JSON, hOCR and ALTO; sizes of the page as given" python3 - "$TMP/eng" <<'PY'
import json, sys, xml.etree.ElementTree as ET
d = sys.argv[1]
up = json.load(open(d + "/eng.json"))
for name, turn in (("eng-rot90", 270), ("eng-rot180", 180), ("eng-rot270", 90)):
    j = json.load(open("%s/%s.json" % (d, name)))
    assert j["rotation"] == turn, (name, j["rotation"])
    # The page's size is the turned file's, not the upright page's.
    want = (up["width"], up["height"]) if turn == 180 else (up["height"], up["width"])
    assert (j["width"], j["height"]) == want, (name, j["width"], j["height"])
    for l in j["lines"]:
        x1, y1, x2, y2 = l["bbox"]
        assert 0 <= x1 < x2 <= j["width"] and 0 <= y1 < y2 <= j["height"], l["bbox"]
        # A line of a page turned a quarter stands upright on it.
        if turn != 180 and len(l["text"]) > 10:
            assert y2 - y1 > 3 * (x2 - x1), (name, l["bbox"], l["text"])
    hocr = open("%s/%s.hocr" % (d, name), encoding="utf-8").read()
    assert "textangle %d" % turn in hocr, name
    alto = ET.parse("%s/%s.xml" % (d, name)).getroot()
    ns = {"a": "http://www.loc.gov/standards/alto/ns-v3#"}
    blocks = alto.findall(".//a:TextBlock", ns)
    assert blocks and all(b.get("ROTATION") == str(turn) for b in blocks), name
hocr = open(d + "/eng.hocr", encoding="utf-8").read()
assert "textangle" not in hocr and up["rotation"] == 0
PY

# --- boxes in the original page's pixels: the known lines of lines.png, turned --------------
if read_pages eng "$TMP/lines" "$F/lines-rot90.png" "$F/lines-rot180.png" "$F/lines-rot270.png" \
    "$F/lines-skew3.png"; then
    check "turned and tilted pages: line boxes where the lines are on the page as given" \
        python3 - "$F/lines.tsv" "$TMP/lines" <<'PY'
import json, math, sys
truth = [[int(v) for v in l.split("\t")[:4]] for l in open(sys.argv[1], encoding="utf-8").read().splitlines()]
W, H = 2480, 1754
def turned(b, d):
    x1, y1, x2, y2 = b
    if d == 90:
        return [H - y2, x1, H - y1, x2]
    if d == 180:
        return [W - x2, H - y2, W - x1, H - y1]
    return [y1, W - x2, y2, W - x1]
for d in (90, 180, 270):
    j = json.load(open("%s/lines-rot%d.json" % (sys.argv[2], d)))
    assert len(j["lines"]) == len(truth), (d, len(j["lines"]))
    worst = 0
    # Reading order is the upright page's: line i is truth line i.
    for t, l in zip(truth, j["lines"]):
        want = turned(t, d)
        err = max(abs(a - b) for a, b in zip(want, l["bbox"]))
        worst = max(worst, err)
        assert err <= 6, (d, want, l["bbox"], l["text"])
    print("# turned %d: worst line box error %d px" % (d, worst))
# Tilted 3 degrees clockwise by vips rotate (about the centre, onto a larger canvas): each
# line's box holds the tilted truth box's centre, and about its size.
j = json.load(open(sys.argv[2] + "/lines-skew3.json"))
assert abs(j["skew"] + 3) <= 0.3, j["skew"]
assert len(j["lines"]) == len(truth), len(j["lines"])
a = math.radians(3)
Wc, Hc = j["width"], j["height"]
for t, l in zip(truth, j["lines"]):
    cx, cy = (t[0] + t[2]) / 2 - W / 2, (t[1] + t[3]) / 2 - H / 2
    px, py = Wc / 2 + cx * math.cos(a) - cy * math.sin(a), Hc / 2 + cx * math.sin(a) + cy * math.cos(a)
    x1, y1, x2, y2 = l["bbox"]
    assert x1 <= px <= x2 and y1 <= py <= y2, (t, l["bbox"], px, py)
    w = t[2] - t[0]
    want_h = (t[3] - t[1]) * math.cos(a) + w * math.sin(a)
    assert abs((x2 - x1) - w * math.cos(a)) <= 0.05 * w + 12 and abs((y2 - y1) - want_h) <= 0.2 * want_h + 8, (t, l["bbox"])
PY
else
    not_ok "lines: ocrpool failed on the turned pages"
fi

# --- tilted pages ------------------------------------------------------------------------
if read_pages eng "$TMP/skew" "$F/eng-skew5.png" "$F/eng-skewm4.png" "$F/eng-rot90-skew4.png" &&
    read_pages san "$TMP/skew" "$F/san-skew3.png"; then
    for f in eng-skew5:-5 eng-skewm4:4 eng-rot90-skew4:-4 san-skew3:-3; do
        name=${f%%:*} want=${f#*:}
        check "$name: skew found as $want degrees" python3 -c "
import json, sys; s = json.load(open('$TMP/skew/$name.json'))['skew']; print('# skew', s)
sys.exit(0 if abs(s - ($want)) <= 0.3 else 1)"
        l=${name%%-*}
        check "$name: within 1 point of the upright page" \
            within_point "$here/../data/text/$l.txt" "$TMP/skew/$name.txt" "$TMP/$l/$l.txt"
    done
    check "eng-rot90-skew4: turned 270 as well" test "$(field "$TMP/skew/eng-rot90-skew4.json" rotation)" = 270
else
    not_ok "ocrpool failed on the tilted pages"
fi

# --- off, and the blank page ------------------------------------------------------------------
if ORIENT_ARGS="--no-rotate-pages --no-deskew" read_pages eng "$TMP/off" "$F/eng-rot180.png" "$F/eng-skew5.png"; then
    check "rotate-pages off: a turned page stays as it is (rotation 0)" \
        test "$(field "$TMP/off/eng-rot180.json" rotation)" = 0
    # Read upside down it is not the page's text: the setting did turn it off.
    check "rotate-pages off: the page upside down is read as such (CER > 0.5)" python3 -c "
import sys; sys.exit(0 if float('$(cer "$here/../data/text/eng.txt" "$TMP/off/eng-rot180.txt")') > 0.5 else 1)"
    check "deskew off: skew 0" python3 -c "
import json, sys; sys.exit(0 if json.load(open('$TMP/off/eng-skew5.json'))['skew'] == 0 else 1)"
else
    not_ok "ocrpool failed with rotate-pages off"
fi
if read_pages eng "$TMP/blank" "$F/blank.png"; then
    check "a blank page keeps rotation 0 and skew 0" python3 -c "
import json, sys; j = json.load(open('$TMP/blank/blank.json'))
sys.exit(0 if j['rotation'] == 0 and j['skew'] == 0 and j['lines'] == [] else 1)"
else
    not_ok "ocrpool failed on a blank page"
fi

# --- the Tesseract engine goes the same way (the checks above ran on the default, lstm) -------
for l in eng san tam; do
    if ORIENT_ARGS="--engine tesseract" read_pages $l "$TMP/tess-$l" "$F/$l.png" "$F/$l-rot90.png" \
        "$F/$l-rot180.png" "$F/$l-rot270.png"; then
        check "tesseract: $l upright: rotation 0, the JSON names the engine" \
            test "$(field "$TMP/tess-$l/$l.json" rotation) $(field "$TMP/tess-$l/$l.json" engine)" = "0 tesseract"
        for d in 90 180 270; do
            want=$(((360 - d) % 360))
            check "tesseract: $l turned $d: rotation $want" \
                test "$(field "$TMP/tess-$l/$l-rot$d.json" rotation)" = $want
            check "tesseract: $l turned $d: within 1 point of the upright page" \
                within_point "$here/../data/text/$l.txt" "$TMP/tess-$l/$l-rot$d.txt" "$TMP/tess-$l/$l.txt"
        done
    else
        not_ok "tesseract: $l: ocrpool --engine tesseract failed on the turned pages"
    fi
done
if ORIENT_ARGS="--engine tesseract" read_pages eng "$TMP/tess-skew" "$F/eng-skew5.png"; then
    check "tesseract: eng-skew5: skew found as -5 degrees" python3 -c "
import json, sys; s = json.load(open('$TMP/tess-skew/eng-skew5.json'))['skew']; print('# skew', s)
sys.exit(0 if abs(s + 5) <= 0.3 else 1)"
    check "tesseract: eng-skew5: within 1 point of the upright page" \
        within_point "$here/../data/text/eng.txt" "$TMP/tess-skew/eng-skew5.txt" "$TMP/tess-eng/eng.txt"
else
    not_ok "tesseract: ocrpool --engine tesseract failed on the tilted page"
fi

# --- the lstm engine and a batch of pages go the same way ------------------------------------
if "$OCRPOOL" ocr -l eng --engine lstm --batch-pages 3 --format txt,json -o "$TMP/lstm" \
    "$F/eng.png" "$F/eng-rot90.png" "$F/eng-rot180.png" "$F/eng-skew5.png"; then
    for f in eng-rot90:270 eng-rot180:180 eng-skew5:0; do
        name=${f%%:*}
        check "lstm, batch-pages 3: $name turned ${f#*:}" test "$(field "$TMP/lstm/$name.json" rotation)" = "${f#*:}"
        check "lstm, batch-pages 3: $name within 1 point of the upright page" \
            within_point "$here/../data/text/eng.txt" "$TMP/lstm/$name.txt" "$TMP/lstm/eng.txt"
    done
else
    not_ok "ocrpool --engine lstm failed on the turned pages"
fi
finish
