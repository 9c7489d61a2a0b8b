#!/usr/bin/env bash
# With resizing off, ocrpool's Tesseract engine (--engine tesseract: the
# default is our own recognizer, compared with libtesseract in test_lstm.sh)
# gives the tesseract CLI's text on the same page (same models, psm 3, one
# OpenMP thread): CER between them <= 1 %.
source "$(dirname "$0")/lib.sh"
for l in eng san tam hin; do
    OMP_THREAD_LIMIT=1 tesseract "$FIXTURES/$l.png" "$TMP/$l.cli" -l "$l" --psm 3 2>/dev/null
    check "$l: ocrpool runs" bash -c "'$OCRPOOL' ocr --engine tesseract --max-image-size 0 -l $l '$FIXTURES/$l.png' >'$TMP/$l.ours'"
    check "$l: text equals the tesseract CLI's (CER <= 1 %)" cer_below "$TMP/$l.cli.txt" "$TMP/$l.ours" 0.01
done
# A PDF page: the CLI gets the page rendered at the same resolution.
pdftoppm -r 200 -gray -png -singlefile "$FIXTURES/eng.pdf" "$TMP/engpdf"
OMP_THREAD_LIMIT=1 tesseract "$TMP/engpdf.png" "$TMP/engpdf.cli" -l eng --dpi 200 2>/dev/null
"$OCRPOOL" ocr --engine tesseract --max-image-size 0 -l eng "$FIXTURES/eng.pdf" >"$TMP/engpdf.ours"
check "eng.pdf at 200 dpi: text equals the tesseract CLI's on pdftoppm's render" \
    cer_below "$TMP/engpdf.cli.txt" "$TMP/engpdf.ours" 0.01
finish
