#!/usr/bin/env bash
# Line boxes against the known positions of the rendered lines, with and
# without resizing: every box is in the original page's pixels.
source "$(dirname "$0")/lib.sh"
for size in 0 2048 1240 1000; do
    if "$OCRPOOL" ocr -l eng --format json --max-image-size $size -o "$TMP/$size" "$FIXTURES/lines.png"; then
        check "max-image-size $size: line boxes within 4 px of the truth" python3 - "$FIXTURES/lines.tsv" "$TMP/$size/lines.json" $size <<'PY'
import json, sys
truth = [l.split("\t") for l in open(sys.argv[1], encoding="utf-8").read().splitlines()]
j = json.load(open(sys.argv[2], encoding="utf-8"))
assert (j["width"], j["height"]) == (2480, 1754), (j["width"], j["height"])
assert len(j["lines"]) == len(truth), (len(j["lines"]), len(truth))
tol = 4 if sys.argv[3] in ("0", "2048") else 6
worst = 0
for t, l in zip(truth, j["lines"]):
    want = [int(v) for v in t[:4]]
    d = max(abs(a - b) for a, b in zip(want, l["bbox"]))
    worst = max(worst, d)
    assert d <= tol, (want, l["bbox"], t[4])
    for w in l["words"]:
        x1, y1, x2, y2 = w["bbox"]
        assert want[0] - tol <= x1 < x2 <= want[2] + tol and want[1] - tol <= y1 < y2 <= want[3] + tol, (w, want)
print("# worst line box error at max-image-size %s: %d px" % (sys.argv[3], worst))
PY
    else
        not_ok "max-image-size $size: ocrpool failed"
    fi
done
finish
