#!/usr/bin/env bash
# Makes samples/sample.pdf, the document `make demo` OCRs: a page of
# English and a page of Sanskrit set in Noto fonts. The PDF is committed;
# this script records how it was made (needs pango-view and pdfunite).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/eng.txt" <<'TXT'
ocrpool: a memory-bounded OCR job system

Digital libraries must read hundreds of thousands of scanned
pages in Sanskrit, Tamil, Hindi and English. ocrpool runs
them through a bounded pool of workers that share one copy
of each model, so a server never runs out of memory.

Every page is checked before it is decoded, every worker is
measured while it works, and a page that fails says why.
TXT
cat >"$tmp/san.txt" <<'TXT'
धर्मक्षेत्रे कुरुक्षेत्रे समवेता युयुत्सवः ।
मामकाः पाण्डवाश्चैव किमकुर्वत सञ्जय ॥

कर्मण्येवाधिकारस्ते मा फलेषु कदाचन ।
मा कर्मफलहेतुर्भूर्मा ते सङ्गोऽस्त्वकर्मणि ॥
TXT
pango-view --font="Noto Serif 14" --margin=72 --background=white -q \
    -o "$tmp/p1.pdf" "$tmp/eng.txt"
pango-view --font="Noto Serif Devanagari 16" --margin=72 --background=white -q \
    -o "$tmp/p2.pdf" "$tmp/san.txt"
mkdir -p samples
pdfunite "$tmp/p1.pdf" "$tmp/p2.pdf" samples/sample.pdf
echo "samples/sample.pdf: $(stat -c %s samples/sample.pdf) bytes"
