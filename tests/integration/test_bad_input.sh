#!/usr/bin/env bash
# Bad input: each case is one failed page with a one-line reason, exit
# status 1 (never a signal), peak RSS far below what the header claims,
# and the other pages of the same run go on.
source "$(dirname "$0")/lib.sh"
B=$FIXTURES/bad
declare -A reason=(
    [empty.png]="empty file"
    [truncated.png]="cannot decode"
    [truncated.jpg]="cannot decode"
    [truncated.pdf]="damaged"
    [text.png]="not a supported image or PDF"
    [huge-header.png]="over the limit"
    [bomb.png]="over the limit"
)
for f in "${!reason[@]}"; do
    /usr/bin/time -f %M -o "$TMP/$f.rss" "$OCRPOOL" ocr -l eng "$B/$f" >"$TMP/$f.out" 2>"$TMP/$f.err"
    rc=$?
    check "$f: exit status 1 (got $rc)" test $rc -eq 1
    check "$f: one line on stderr naming the file and the reason" \
        bash -c "[ \$(wc -l <'$TMP/$f.err') -eq 1 ] && grep -q '^ocrpool: .*$f: .*${reason[$f]}' '$TMP/$f.err'"
    echo "# $f: $(cat "$TMP/$f.err") (peak RSS $(peak_rss_kb "$TMP/$f.rss") KiB)"
    if [ -z "${OCP_ASAN:-}" ]; then
        check "$f: peak RSS under 300 MB" test "$(peak_rss_kb "$TMP/$f.rss")" -lt 300000
    fi
done

# A PDF with a broken cross-reference table: poppler rebuilds it, the page is read.
check "badxref.pdf: repaired and read" "$OCRPOOL" ocr -l eng "$B/badxref.pdf" -o "$TMP/xref"
check "badxref.pdf: text" cer_below "$here/../data/text/eng.txt" "$TMP/xref/badxref.txt" 0.03

# All of them in one run with good pages around them: the good pages are done.
"$OCRPOOL" ocr -l eng -o "$TMP/mixed" "$FIXTURES/eng.png" "$B"/*.png "$B"/*.jpg "$B/truncated.pdf" \
    "$FIXTURES/two.tif" 2>"$TMP/mixed.err"
rc=$?
check "mixed run: exit status 1" test $rc -eq 1
check "mixed run: the good pages are written" \
    test -s "$TMP/mixed/eng.txt" -a -s "$TMP/mixed/two-p1.txt" -a -s "$TMP/mixed/two-p2.txt"
check "mixed run: good page text" cer_below "$here/../data/text/eng.txt" "$TMP/mixed/eng.txt" 0.02
sed 's/^/# /' "$TMP/mixed.err"
check "mixed run: each bad input listed once" test "$(wc -l <"$TMP/mixed.err")" -eq 7
# A limit set low refuses a page that is fine otherwise, and says which setting.
"$OCRPOOL" ocr -l eng --max-pixels 100000 "$FIXTURES/eng.png" 2>"$TMP/lim.err"
rc=$?
check "max-pixels: refused (exit $rc)" test $rc -eq 1
check "max-pixels: the setting is named" grep -q 'max-pixels' "$TMP/lim.err"
# A page that runs past its deadline fails with a reason.
"$OCRPOOL" ocr -l eng --page-timeout 0.01 "$FIXTURES/lines.png" 2>"$TMP/to.err"
rc=$?
check "page-timeout: exit 1 (got $rc)" test $rc -eq 1
check "page-timeout: reason" grep -q 'page timeout' "$TMP/to.err"
# A full disk under the sidecar: the run fails with the reason, the page outputs are kept.
"$OCRPOOL" ocr -l eng --sidecar /dev/full -o "$TMP/full" "$FIXTURES/eng.png" 2>"$TMP/full.err"
rc=$?
check "full disk: exit 1 (got $rc)" test $rc -eq 1
check "full disk: reason" grep -q 'No space left on device' "$TMP/full.err"
check "full disk: page output kept" test -s "$TMP/full/eng.txt"
finish
