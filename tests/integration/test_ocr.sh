#!/usr/bin/env bash
# `ocrpool ocr` on every accepted input format, multi-page inputs, standard
# input, the sidecar and every rendering, checked against the rendered text.
source "$(dirname "$0")/lib.sh"
T=$here/../data/text
F=$FIXTURES

# Every format, the same English page: text within 2 % CER of what was rendered.
for f in eng.png eng.rgb.png eng.jpg eng.webp eng.pnm eng.tif eng.gif eng.rgba.png eng16.png \
    eng-exif6.jpg jpeg-named.png eng.pdf; do
    if "$OCRPOOL" ocr -l eng "$F/$f" >"$TMP/$f.txt" 2>"$TMP/$f.err"; then
        check "$f: English text" cer_below "$T/eng.txt" "$TMP/$f.txt" 0.02
    else
        not_ok "$f: exit status $? ($(cat "$TMP/$f.err"))"
    fi
done

# The other languages.
check "san.png: Sanskrit text" bash -c "'$OCRPOOL' ocr -l san '$F/san.png' >'$TMP/san.txt'"
check "san.png: CER" cer_below "$T/san.txt" "$TMP/san.txt" 0.03
check "tam.png: Tamil text" bash -c "'$OCRPOOL' ocr -l tam '$F/tam.png' >'$TMP/tam.txt'"
check "tam.png: CER" cer_below "$T/tam.txt" "$TMP/tam.txt" 0.03
check "hin.png: Hindi text" bash -c "'$OCRPOOL' ocr -l hin '$F/hin.png' >'$TMP/hin.txt'"
check "hin.png: CER" cer_below "$T/hin.txt" "$TMP/hin.txt" 0.03
check "tam.tif: Tamil TIFF" bash -c "'$OCRPOOL' ocr -l tam '$F/tam.tif' >'$TMP/tamtif.txt'"
check "tam.tif: CER" cer_below "$T/tam.txt" "$TMP/tamtif.txt" 0.03

# EXIF orientation 6: the page is made upright, and its size is the upright size.
"$OCRPOOL" ocr -l eng --format json -o "$TMP/exif" "$F/eng-exif6.jpg"
read -r w h < <(python3 -c "import json,sys; d=json.load(open('$TMP/exif/eng-exif6.json')); print(d['width'], d['height'])")
read -r ew eh < <(echo "$(vipsheader -f width "$F/eng.png") $(vipsheader -f height "$F/eng.png")")
check "EXIF orientation: upright size ${w}x${h} = ${ew}x${eh}" test "$w $h" = "$ew $eh"

# A two-page TIFF: two pages, named -p1 and -p2, each with its own text.
check "two.tif: exit 0" "$OCRPOOL" ocr -l eng+san -o "$TMP/tif" "$F/two.tif"
check "two.tif: page files" test -f "$TMP/tif/two-p1.txt" -a -f "$TMP/tif/two-p2.txt" -a ! -e "$TMP/tif/two.txt"
check "two.tif: page 1 English" cer_below "$T/eng.txt" "$TMP/tif/two-p1.txt" 0.03
check "two.tif: page 2 Sanskrit" cer_below "$T/san.txt" "$TMP/tif/two-p2.txt" 0.05

# A two-page PDF with a sidecar: all text, pages in order, a form feed between.
check "two.pdf: sidecar run" "$OCRPOOL" ocr -l eng+san --pdf-dpi 300 --sidecar "$TMP/side.txt" "$F/two.pdf"
python3 - "$TMP/side.txt" "$TMP/side" <<'PY'
import sys
pages = open(sys.argv[1], encoding="utf-8").read().split("\f")
for i, p in enumerate(pages, 1):
    open("%s-%d.txt" % (sys.argv[2], i), "w", encoding="utf-8").write(p)
print("# sidecar pages:", len(pages))
PY
check "two.pdf: sidecar has 2 pages" test -f "$TMP/side-2.txt" -a ! -f "$TMP/side-3.txt"
check "two.pdf: sidecar page 1 English" cer_below "$T/eng.txt" "$TMP/side-1.txt" 0.03
check "two.pdf: sidecar page 2 Sanskrit" cer_below "$T/san.txt" "$TMP/side-2.txt" 0.03

# Standard input, text on standard output.
check "stdin: exit 0" bash -c "'$OCRPOOL' ocr -l eng - <'$F/eng.png' >'$TMP/stdin.txt'"
check "stdin: text" cer_below "$T/eng.txt" "$TMP/stdin.txt" 0.02

# Every rendering, each well-formed and consistent with the JSON: on the default engine (our
# own recognizer, lstm: the JSON names the engine that read the page) and on the Tesseract
# engine.
check "all formats: exit 0" "$OCRPOOL" ocr -l eng --format txt,json,hocr,alto,tsv -o "$TMP/all" "$F/eng.png"
check "all formats, --engine tesseract: exit 0" "$OCRPOOL" ocr --engine tesseract -l eng \
    --format txt,json,hocr,alto,tsv -o "$TMP/all-tess" "$F/eng.png"
for ext in txt json hocr xml tsv; do
    check "all formats: eng.$ext written" test -s "$TMP/all/eng.$ext" -a -s "$TMP/all-tess/eng.$ext"
done
for d in all:lstm all-tess:tesseract; do
    check "renderings agree with the JSON (engine ${d#*:})" python3 - "$TMP/${d%%:*}" "${d#*:}" <<'PY'
import json, sys, xml.etree.ElementTree as ET
d = sys.argv[1]
j = json.load(open(d + "/eng.json", encoding="utf-8"))
for k in ("id", "source", "page", "width", "height", "lang", "engine", "text",
          "mean_confidence", "lines", "elapsed_ms", "peak_rss_kb"):
    assert k in j, "json lacks " + k
assert j["engine"] == sys.argv[2] and j["lang"] == "eng" and j["page"] == 1, j["engine"]
words = [w for l in j["lines"] for w in l["words"]]
assert len(j["lines"]) == 5, len(j["lines"])
for l in j["lines"]:
    x1, y1, x2, y2 = l["bbox"]
    assert 0 <= x1 < x2 <= j["width"] and 0 <= y1 < y2 <= j["height"], l["bbox"]
    assert 0 <= l["confidence"] <= 100
    assert " ".join(w["text"] for w in l["words"]) == l["text"], (l["text"],)
assert open(d + "/eng.txt", encoding="utf-8").read() == j["text"]
h = ET.parse(d + "/eng.hocr").getroot()
ns = {"h": "http://www.w3.org/1999/xhtml"}
hw = [s for s in h.iter("{http://www.w3.org/1999/xhtml}span") if s.get("class") == "ocrx_word"]
assert [s.text for s in hw] == [w["text"] for w in words]
assert hw[0].get("title").startswith("bbox %d %d %d %d" % tuple(words[0]["bbox"]))
a = ET.parse(d + "/eng.xml").getroot()
strings = [e for e in a.iter("{http://www.loc.gov/standards/alto/ns-v3#}String")]
assert [s.get("CONTENT") for s in strings] == [w["text"] for w in words]
s0 = strings[0]
x1, y1, x2, y2 = words[0]["bbox"]
assert (int(s0.get("HPOS")), int(s0.get("VPOS")), int(s0.get("WIDTH")), int(s0.get("HEIGHT"))) == (x1, y1, x2 - x1, y2 - y1)
rows = [r.split("\t") for r in open(d + "/eng.tsv", encoding="utf-8").read().splitlines()]
assert rows[0][0] == "level" and all(len(r) == 12 for r in rows), "tsv columns"
assert [r[11] for r in rows[1:] if r[0] == "5"] == [w["text"] for w in words]
print("# %d lines, %d words agree in json, hocr, alto, tsv, txt" % (len(j["lines"]), len(words)))
PY
done
check "all formats: the two engines' texts agree (CER at most 0.01)" \
    cer_below "$TMP/all-tess/eng.txt" "$TMP/all/eng.txt" 0.01
# A plain run reads with our recognizer: its engine says so when it opens.
"$OCRPOOL" ocr --log-level info -j 1 -l eng "$F/eng.png" 2>"$TMP/default.log" >"$TMP/default.txt"
check "the default engine is lstm: the zygote's engine, its model read by ocrpool" \
    bash -c "grep -q 'zygote ready: engine lstm, eng' '$TMP/default.log' && grep -q 'lstm engine: 1 model(s) read by ocrpool' '$TMP/default.log'"
check "the default engine is lstm: libtesseract's recognizer not loaded" \
    bash -c "! grep -q 'tesseract [0-9.]* loaded eng' '$TMP/default.log'"
check "the default engine is lstm: the text read" cer_below "$T/eng.txt" "$TMP/default.txt" 0.02
# A model without an LSTM network (osd: legacy only) cannot be read by the default engine:
# the run fails at once with the reason, which names the engine that can read it. (A state
# folder of its own: the failed run keeps its queue, which the checks below must not see.)
XDG_STATE_HOME=$TMP/osd-state "$OCRPOOL" ocr -l osd "$F/eng.png" >"$TMP/osd.out" 2>"$TMP/osd.err"
rc=$?
sed 's/^/# /' "$TMP/osd.err"
check "a legacy-only model: exit 1 (got $rc), the reason names --engine tesseract" \
    bash -c "[ $rc -eq 1 ] && grep -q '^ocrpool: .*osd.traineddata: no LSTM model .*--engine tesseract' '$TMP/osd.err' && [ ! -s '$TMP/osd.out' ]"
check "a legacy-only model: --engine tesseract reads with it" \
    bash -c "XDG_STATE_HOME='$TMP/osd-state' '$OCRPOOL' ocr --engine tesseract -l osd '$F/eng.png' 2>/dev/null | grep >/dev/null '[a-z]'"

# --format beyond txt without -o: files in the current folder, nothing on stdout.
mkdir -p "$TMP/cwd"
(cd "$TMP/cwd" && "$OCRPOOL" ocr -l tam --format txt,json,hocr,alto,tsv "$F/tam.tif" >"$TMP/cwd.out")
check "--format without -o: files in the current folder" \
    test -s "$TMP/cwd/tam.txt" -a -s "$TMP/cwd/tam.json" -a -s "$TMP/cwd/tam.hocr" -a -s "$TMP/cwd/tam.xml" -a -s "$TMP/cwd/tam.tsv"
check "--format without -o: nothing on stdout" test ! -s "$TMP/cwd.out"

# Progress: one line on a terminal (script gives a pty), nothing on a pipe, lines with -v.
script -qec "'$OCRPOOL' ocr -l eng -o '$TMP/prog' '$F/two.tif'" /dev/null </dev/null >"$TMP/tty.out" 2>&1
check "progress on a terminal" grep -q '2/2 pages .*pages/s.*ETA' "$TMP/tty.out"
"$OCRPOOL" ocr -l eng -o "$TMP/prog2" "$F/two.tif" 2>"$TMP/pipe.err"
sed 's/^/# /' "$TMP/pipe.err"
check "no progress on a pipe" test ! -s "$TMP/pipe.err"
"$OCRPOOL" ocr -v -l eng -o "$TMP/prog3" "$F/two.tif" 2>"$TMP/v.err"
check "-v: a line per page and a summary" \
    bash -c "[ \$(grep -c 'page [12]: .* lines, .* s, peak RSS' '$TMP/v.err') -eq 2 ] && grep -q '2 pages: 2 done, 0 failed' '$TMP/v.err'"

# Several inputs in one run, output names from their stems; same stems kept apart.
mkdir -p "$TMP/a"
cp "$F/eng.png" "$TMP/a/eng.png"
check "several inputs: exit 0" "$OCRPOOL" ocr -l eng -o "$TMP/many" "$F/eng.png" "$TMP/a/eng.png" "$F/eng.jpg"
check "several inputs: distinct names" test -f "$TMP/many/eng.txt" -a -f "$TMP/many/eng-2.txt" -a -f "$TMP/many/eng-3.txt"
# The same file twice is the same task twice: both pages are written, and the run ends.
check "the same file twice: exit 0" timeout 120 "$OCRPOOL" ocr -l eng -o "$TMP/twice" "$F/eng.png" "$F/eng.png"
check "the same file twice: both written" test -s "$TMP/twice/eng.txt" -a -s "$TMP/twice/eng-2.txt"

# A fresh run is no resumed one, though pages finish while others are still being queued;
# those pages are written as any other, and a page that cannot be written fails the run.
vips crop "$F/eng.png" "$TMP/tiny.png" 0 0 120 40
mkdir -p "$TMP/many" "$TMP/manyout/p1.txt"
for i in $(seq 1 1500); do cp "$TMP/tiny.png" "$TMP/many/p$i.png"; done
"$OCRPOOL" ocr -v -l eng -o "$TMP/manyout" "$TMP"/many/*.png 2>"$TMP/many.err"
rc=$?
grep -v ' lines, ' "$TMP/many.err" | sed 's/^/# /'
check "a fresh run: nothing said of resuming" bash -c "! grep -q resuming '$TMP/many.err'"
check "a fresh run: a page that cannot be written fails it (exit $rc)" \
    bash -c "[ $rc -eq 1 ] && grep -q 'p1.png: cannot write' '$TMP/many.err'"
check "a fresh run: the other pages written" test "$(ls "$TMP/manyout" | wc -l)" -eq 1500
# A run that ends by an error while its pages are being queued (a language not installed):
# said as an end, not as a stop; the count is of the pages queued; and the way to resume
# says that the cause comes first (the same command alone would end the same way).
"$OCRPOOL" ocr -l kat -o "$TMP/katout" "$TMP"/many/*.png 2>"$TMP/kat.err"
rc=$?
sed 's/^/# /' "$TMP/kat.err"
check "an error while queueing: exit 1 (got $rc), an end, the queued pages counted" \
    bash -c "[ $rc -eq 1 ] && grep -q '^ocrpool: the run ended before every page was queued: run the same command again to resume once the cause above is fixed\$' '$TMP/kat.err' && grep -Eq '^ocrpool: [0-9]+ pages queued: 0 done, 0 failed, [0-9]+ not done' '$TMP/kat.err' && ! grep -q stopped '$TMP/kat.err'"

# ^C on a terminal reaches the command alone (its node has a process group of its own);
# the command passes stops on: one ^C (or SIGTERM, SIGHUP) is a warm stop (running pages
# finish), a second, or SIGQUIT, a cold one. The run says how to resume and exits 1.
mkdir -p "$TMP/book"
for i in 1 2 3 4 5 6; do cp "$F/eng.png" "$TMP/book/page$i.png"; done
start_book() { # start_book OUT: a slow run of the book in the background, $pid once going
    : >"$TMP/$1.err"
    OCRPOOL_FAULT=sleep:1:page setsid "$OCRPOOL" ocr -v -j 2 -l eng -o "$TMP/$1" "$TMP"/book/*.png \
        2>"$TMP/$1.err" &
    pid=$!
    wait_log "$TMP/$1.err" "fault injection: sleeping" 30
}
interrupt() { # interrupt TIMES OUT [SIG [TARGET]]: SIG (INT: ^C) TIMES to the run's
    local k #     process group (TARGET "-", the default) or to the command alone ("")
    start_book "$2"
    for k in $(seq 1 "$1"); do
        kill -"${3:-INT}" -- "${4--}$pid"
        sleep 0.1
    done
    wait "$pid"
}
interrupt 1 warm
rc=$?
sed 's/^/# /' "$TMP/warm.err"
check "one ^C: exit 1 (got $rc)" test $rc -eq 1
check "one ^C: a warm stop, not a cold one" \
    bash -c "grep -q 'warm shutdown' '$TMP/warm.err' && ! grep -q 'cold shutdown' '$TMP/warm.err'"
check "one ^C: the running pages finished and were written" \
    test "$(ls "$TMP/warm"/*.txt 2>/dev/null | wc -l)" -ge 2
check "one ^C: says how to resume" grep -q "run the same command again to resume" "$TMP/warm.err"
check "one ^C: said on a line of its own, and the summary counts what is not done" \
    bash -c "grep -q '^ocrpool: stopping: running pages finish' '$TMP/warm.err' && grep -Eq '^ocrpool: 6 pages: [0-9] done, 0 failed, [1-9] not done' '$TMP/warm.err'"
interrupt 2 cold
rc=$?
check "two ^C: exit 1 (got $rc)" test $rc -eq 1
check "two ^C: a cold stop" grep -q 'cold shutdown' "$TMP/cold.err"
check "two ^C: says how to resume" grep -q "run the same command again to resume" "$TMP/cold.err"
check "two ^C: both stops said" \
    bash -c "grep -q '^ocrpool: stopping: running' '$TMP/cold.err' && grep -q '^ocrpool: stopping now' '$TMP/cold.err'"
"$OCRPOOL" ocr -l eng -o "$TMP/cold" "$TMP"/book/*.png 2>"$TMP/cold2.err"
rc=$?
check "after two ^C: the rerun finishes (exit $rc)" \
    bash -c "[ $rc -eq 0 ] && [ \$(ls '$TMP/cold'/*.txt | wc -l) -eq 6 ]"
interrupt 1 hup HUP
rc=$?
check "SIGHUP: exit 1 (got $rc), a warm stop, pages written" \
    bash -c "[ $rc -eq 1 ] && grep -q 'warm shutdown' '$TMP/hup.err' && ! grep -q 'cold shutdown' '$TMP/hup.err' && [ \$(ls '$TMP/hup'/*.txt | wc -l) -ge 2 ]"
check "SIGHUP: says how to resume" grep -q "run the same command again to resume" "$TMP/hup.err"
# SIGQUIT to the command alone (a background job may have inherited it ignored).
interrupt 1 quit QUIT ""
rc=$?
check "SIGQUIT: exit 1 (got $rc), a cold stop" \
    bash -c "[ $rc -eq 1 ] && grep -q 'cold shutdown' '$TMP/quit.err'"

# SIGTERM to the command and its node at once (a service manager stopping the whole
# control group): one warm stop, not two that make a cold one.
start_book both
node=$(ps -o pid= --ppid "$pid" | head -1)
kill -TERM "$pid" $node
wait "$pid"
rc=$?
check "SIGTERM to the command and its node at once: exit 1 (got $rc), a warm stop, not cold" \
    bash -c "[ $rc -eq 1 ] && grep -q 'warm shutdown' '$TMP/both.err' && ! grep -q 'cold shutdown' '$TMP/both.err'"

# A node killed under the run: said, exit 1, how to resume.
start_book killed
node=$(ps -o pid= --ppid "$pid" | head -1)
kill -KILL $node
wait "$pid"
rc=$?
sed 's/^/# /' "$TMP/killed.err"
check "node killed: exit 1 (got $rc)" test $rc -eq 1
check "node killed: said" grep -q "the node was killed by signal 9" "$TMP/killed.err"
check "node killed: says how to resume" grep -q "run the same command again to resume" "$TMP/killed.err"

# Standard output closed early (| head): an error said, exit 1, the temporary queue (of
# standard input, which cannot be resumed) removed.
mkdir -p "$TMP/pipetmp"
(
    TMPDIR="$TMP/pipetmp" "$OCRPOOL" ocr -l eng - <"$F/two.tif" 2>"$TMP/epipe.err"
    echo $? >"$TMP/epipe.rc"
) | true
check "closed stdout: exit 1 (got $(cat "$TMP/epipe.rc"))" test "$(cat "$TMP/epipe.rc")" = 1
check "closed stdout: said" grep -q "cannot write standard output" "$TMP/epipe.err"
check "closed stdout: no temporary queue left" test -z "$(ls -A "$TMP/pipetmp")"

# Without -o the run is resumable too: its queue is kept in the user's state folder
# (XDG_STATE_HOME, set by lib.sh) until the same command completes it; the resumed run
# prints every page's text, as an uninterrupted one does, and removes the queue.
"$OCRPOOL" ocr -l eng "$TMP"/book/*.png >"$TMP/whole.txt" 2>/dev/null
check "without -o: a complete run leaves no queue" test -z "$(ls -A "$XDG_STATE_HOME/ocrpool/runs")"
: >"$TMP/noo.err"
OCRPOOL_FAULT=sleep:1:page setsid "$OCRPOOL" ocr -v -j 2 -l eng "$TMP"/book/*.png \
    >"$TMP/noo1.txt" 2>"$TMP/noo.err" &
pid=$!
wait_log "$TMP/noo.err" "page [0-9]: .* lines" 60
kill -INT -- -$pid
wait $pid
rc=$?
check "without -o, interrupted: exit 1 (got $rc), says how to resume, the queue kept" \
    bash -c "[ $rc -eq 1 ] && grep -q 'run the same command again to resume' '$TMP/noo.err' && [ \$(ls '$XDG_STATE_HOME/ocrpool/runs'/*.db | wc -l) -eq 1 ]"
"$OCRPOOL" ocr -v -j 2 -l eng "$TMP"/book/*.png >"$TMP/noo2.txt" 2>"$TMP/noo2.err"
rc=$?
sed 's/^/# /' "$TMP/noo2.err" | grep -v ' lines, '
check "without -o, rerun: exit 0 (got $rc), resumed" \
    bash -c "[ $rc -eq 0 ] && grep -Eq 'resuming: [1-5] of 6 pages done already' '$TMP/noo2.err'"
check "without -o, rerun: the whole text, as an uninterrupted run gives it" cmp "$TMP/whole.txt" "$TMP/noo2.txt"
check "without -o, rerun: the queue removed" test -z "$(ls -A "$XDG_STATE_HOME/ocrpool/runs")"

# The same command twice at once: the second runs on a temporary queue (and says so), and
# leaves the first one's queue alone.
OCRPOOL_FAULT=sleep:1:page "$OCRPOOL" ocr -j 2 -l eng "$TMP"/book/*.png >"$TMP/dup1.txt" 2>"$TMP/dup1.err" &
pid=$!
for _ in $(seq 50); do [ -n "$(ls -A "$XDG_STATE_HOME/ocrpool/runs" 2>/dev/null)" ] && break; sleep 0.1; done
"$OCRPOOL" ocr -j 2 -l eng "$TMP"/book/*.png >"$TMP/dup2.txt" 2>"$TMP/dup2.err"
rc=$?
check "the same command twice at once: the second says it cannot be resumed, exit $rc" \
    bash -c "[ $rc -eq 0 ] && grep -q 'the same command is running already' '$TMP/dup2.err' && cmp -s '$TMP/whole.txt' '$TMP/dup2.txt'"
check "the same command twice at once: the first one's queue is still there" \
    test "$(ls "$XDG_STATE_HOME/ocrpool/runs"/*.db 2>/dev/null | wc -l)" -eq 1
wait $pid
check "the same command twice at once: the first completes (exit $?) and removes its queue" \
    bash -c "cmp -s '$TMP/whole.txt' '$TMP/dup1.txt' && [ -z \"\$(ls -A '$XDG_STATE_HOME/ocrpool/runs')\" ]"
# The second one stopped: its queue was temporary, and it says so rather than promising
# that the same command resumes it.
OCRPOOL_FAULT=sleep:2:page "$OCRPOOL" ocr -j 1 -l eng "$TMP"/book/page[12].png >/dev/null 2>&1 &
pid=$!
for _ in $(seq 50); do [ -n "$(ls -A "$XDG_STATE_HOME/ocrpool/runs" 2>/dev/null)" ] && break; sleep 0.1; done
: >"$TMP/busy.err"
OCRPOOL_FAULT=sleep:2:page setsid "$OCRPOOL" ocr -v -j 1 -l eng "$TMP"/book/page[12].png \
    >/dev/null 2>"$TMP/busy.err" &
pid2=$!
wait_log "$TMP/busy.err" "fault injection: sleeping" 30
kill -INT -- -$pid2
wait $pid2
rc=$?
sed 's/^/# /' "$TMP/busy.err" | grep -v ' lines, '
check "the same command twice at once, the second stopped: exit 1 (got $rc), cannot be resumed, said so" \
    bash -c "[ $rc -eq 1 ] && grep -q 'this run had a temporary queue (the same command was running already) and cannot be resumed' '$TMP/busy.err' && ! grep -q 'run the same command again' '$TMP/busy.err'"
wait $pid

# The pool's log in a plain run: its first warning said as the command says things, the
# rest counted; -v passes every log line on as it is. (max-memory-per-child 1 KiB: every
# worker is replaced after its page.)
"$OCRPOOL" ocr -j 1 -l eng --max-memory-per-child 1 "$TMP"/book/page[123].png \
    >/dev/null 2>"$TMP/log.err"
sed 's/^/# /' "$TMP/log.err"
check "plain run: one warning, said as the command says things, the rest counted" \
    bash -c "[ \$(grep -c 'replaced' '$TMP/log.err') -eq 1 ] && grep -q '^ocrpool: note: a worker used [0-9.]* [KM]iB on a page, more than max-memory-per-child (1 KiB), and was replaced\$' '$TMP/log.err' && grep -q '^ocrpool: 2 more warnings of the workers not shown' '$TMP/log.err' && ! grep -q '^20[0-9-]*T' '$TMP/log.err' && ! grep -q 'replacing worker' '$TMP/log.err'"
"$OCRPOOL" ocr -v -j 1 -l eng --max-memory-per-child 1 "$TMP"/book/page[123].png \
    >/dev/null 2>"$TMP/logv.err"
check "-v: every warning, with its time and process" \
    test "$(grep -c '^20[0-9-]*T.* warn: replacing worker' "$TMP/logv.err")" -eq 3
# `ocr -o DIR` again into the same folder with another set of files: one queue, whose
# tasks each belong to the group of the run that made them. Each rerun finishes (within
# 60 s: before the fix, pages done by a run of another set were never seen, and the run
# waited for ever), keeps the pages done before, OCRs the new files, and neither works nor
# counts the pages of files it does not name.
mkdir -p "$TMP/set-in"
for n in a b c d e f1 f2 g; do cp "$F/eng.png" "$TMP/set-in/$n.png"; done
sets() { # sets NAME FILE...: ocr -o $TMP/sets of set-in/FILE.png, 60 s at most; $rc, NAME.err
    local name=$1 n args=()
    shift
    for n in "$@"; do args+=("$TMP/set-in/$n.png"); done
    timeout 60 "$OCRPOOL" ocr -v -j 2 -l eng -o "$TMP/sets" "${args[@]}" 2>"$TMP/set-$name.err"
    rc=$?
    grep -v ' lines, ' "$TMP/set-$name.err" | sed 's/^/# /'
}
set_ok() { # set_ok NAME WHAT RESUMED PAGES: exit 0, RESUMED pages resumed, PAGES pages all done
    local name=$1 what=$2
    shift 2
    local why="exit $rc" pages=pages
    [ "$rc" -eq 0 ] || { [ "$rc" -eq 124 ] && why="hung: killed after 60 s"; }
    [ "$2" -eq 1 ] && pages=page
    check "other sets, $what: finishes ($why), $1 of $2 pages resumed, $2 done" \
        bash -c "[ $rc -eq 0 ] && { [ $1 -eq 0 ] || grep >/dev/null '^ocrpool: resuming: $1 of $2 pages done already' '$TMP/set-$name.err'; } && grep -q '^ocrpool: $2 $pages: $2 done, 0 failed;' '$TMP/set-$name.err'"
}
sets first a b
set_ok first "a first set (a b)" 0 2
sets other a c
set_ok other "another set (a c after a b)" 1 2
check "other sets: the new file's text" cer_below "$T/eng.txt" "$TMP/sets/c.txt" 0.02
sets superset a b c d
set_ok superset "a superset (a b c d)" 3 4
check "other sets: the superset's new file's text" cer_below "$T/eng.txt" "$TMP/sets/d.txt" 0.02
sets subset b
set_ok subset "a subset (b)" 1 1
sets same a b c d
set_ok same "the same set again (a b c d)" 4 4
# A run stopped with pages not done, then a run of another set naming one of them: that
# page is done in the new run; the other run's pages are left in the queue, not worked.
: >"$TMP/set-stop.err"
OCRPOOL_FAULT=sleep:2:set-in setsid "$OCRPOOL" ocr -v -j 1 -l eng -o "$TMP/sets" \
    "$TMP/set-in/f1.png" "$TMP/set-in/f2.png" "$TMP/set-in/e.png" 2>"$TMP/set-stop.err" &
pid=$!
wait_log "$TMP/set-stop.err" "fault injection: sleeping" 30
kill -INT -- -$pid
wait $pid
rc=$?
check "other sets: a stopped run (exit $rc) left f2 and e not done" \
    bash -c "[ $rc -eq 1 ] && [ ! -e '$TMP/sets/f2.txt' ] && [ ! -e '$TMP/sets/e.txt' ]"
sets after-stop e g
set_ok after-stop "a page left by a stopped run of another set (e g after f1 f2 e)" 0 2
check "other sets: e and g written, f2 (not named) left undone" \
    bash -c "[ -s '$TMP/sets/e.txt' ] && [ -s '$TMP/sets/g.txt' ] && [ ! -e '$TMP/sets/f2.txt' ]"
finish
