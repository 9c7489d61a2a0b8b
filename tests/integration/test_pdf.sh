#!/usr/bin/env bash
# Searchable PDFs (app/pdf.c): `ocrpool ocr --format pdf` and `--output-pdf` on PDF inputs
# (the layer grafted, the page's content and images kept) and image inputs (a JPEG passed
# through byte for byte, a PNG losslessly, a two-page TIFF); Sanskrit and Tamil round
# trips through poppler's pdftotext compared with our own text; a page with /Rotate 90;
# a four-page book interrupted, then resumed, still assembled; `ocrpool result GROUP
# --format pdf`; GET /v1/groups/ID/result?format=pdf, of a path job and of uploads sent
# with pdf=1 (a Sanskrit PDF, a JPEG, and a Tamil PDF on Redis: their PDF made once their
# pages are done, the uploads deleted then, the PDF deleted 30 s after its first download,
# or unfetched after the result lifetime); pages turned 90/180/270 and tilted, the layer
# drawn along their reading direction (before the Celery section, which ends the script
# where Celery is missing). `qpdf --check` on every output.
source "$(dirname "$0")/lib.sh"
F=$FIXTURES
for tool in qpdf pdftotext pdfimages pdfinfo; do
    if ! command -v $tool >/dev/null; then
        skip "$tool is not installed (scripts/install-deps.sh)"
        exit 0
    fi
done

# qpdf_ok PDF: qpdf --check finds nothing wrong (no error, no warning).
qpdf_ok() {
    local out
    out=$(qpdf --check "$1" 2>&1) || { echo "$out" | sed 's/^/# /'; return 1; }
    ! echo "$out" | grep -i >/dev/null "warning\|error:" || { echo "$out" | sed 's/^/# /'; return 1; }
}
# same_text A B: the same words in the same order (whitespace and form feeds aside).
norm() { tr -s ' \n\f\t' '    ' <"$1" | sed 's/^ //; s/ $//'; }
same_text() {
    if [ "$(norm "$1")" = "$(norm "$2")" ]; then return 0; fi
    diff <(norm "$1" | tr ' ' '\n') <(norm "$2" | tr ' ' '\n') | head -10 | sed 's/^/# /'
    return 1
}

# ---- PDF inputs: Sanskrit and Tamil scans, the layer's text is ours --------------------
for l in san tam; do
    "$OCRPOOL" ocr -q -l $l --format pdf,txt,json -o "$TMP/$l" "$F/$l-scan.pdf" 2>"$TMP/$l.err"
    rc=$?
    check "$l scan: exit 0 (got $rc), a PDF" bash -c "[ $rc -eq 0 ] && [ -s '$TMP/$l/$l-scan.pdf' ]"
    check "$l scan: qpdf --check clean" qpdf_ok "$TMP/$l/$l-scan.pdf"
    pdftotext -enc UTF-8 "$TMP/$l/$l-scan.pdf" "$TMP/$l.pdftotext"
    check "$l scan: pdftotext gives back our text" same_text "$TMP/$l/$l-scan.txt" "$TMP/$l.pdftotext"
    check "$l scan: our text is the page's (CER under 0.1)" \
        cer_below "$here/../data/text/$l.txt" "$TMP/$l.pdftotext" 0.1
    # The page's own content is kept: the same image, its JPEG bytes untouched.
    pdfimages -all "$F/$l-scan.pdf" "$TMP/$l-in"
    pdfimages -all "$TMP/$l/$l-scan.pdf" "$TMP/$l-out"
    check "$l scan: the page's image kept byte for byte (not re-encoded)" \
        cmp "$TMP/$l-in-000.jpg" "$TMP/$l-out-000.jpg"
done
check "the scans had no text of their own" test -z "$(pdftotext "$F/san-scan.pdf" - | tr -d ' \n\f')"

# A PDF with text of its own (pango's): that text stays, ours is added beside it.
"$OCRPOOL" ocr -q -l eng --output-pdf "$TMP/eng-own.pdf" "$F/eng.pdf" >"$TMP/eng-own.txt" 2>/dev/null
rc=$?
check "--output-pdf: exit 0 (got $rc), the text still on standard output" \
    bash -c "[ $rc -eq 0 ] && grep -q 'quick brown fox' '$TMP/eng-own.txt'"
check "--output-pdf: qpdf --check clean" qpdf_ok "$TMP/eng-own.pdf"
check "a PDF with text: its own text kept, ours added (each line twice, in content order)" \
    test "$(pdftotext -raw "$TMP/eng-own.pdf" - | grep -c 'quick brown fox')" -eq 2
check "a PDF with text: its fonts kept, ours added" \
    bash -c "pdffonts '$F/eng.pdf' | tail -n +3 | awk '{print \$1}' | while read -r f; do pdffonts '$TMP/eng-own.pdf' | grep >/dev/null \"^\$f \" || exit 1; done && pdffonts '$TMP/eng-own.pdf' | grep >/dev/null GlyphLessFont"

# An encrypted PDF (an owner password, no user password): its encryption is kept.
qpdf --encrypt "" owner-pw 256 --print=none -- "$F/tam-scan.pdf" "$TMP/enc.pdf"
"$OCRPOOL" ocr -q -l tam --output-pdf "$TMP/enc-ocr.pdf" "$TMP/enc.pdf" >"$TMP/enc.txt" 2>"$TMP/enc.err"
rc=$?
check "encrypted PDF: exit 0 (got $rc), qpdf --check clean" bash -c "[ $rc -eq 0 ]" && qpdf_ok "$TMP/enc-ocr.pdf"
check "encrypted PDF: still encrypted as it was (AES-256, R = 6, no printing)" \
    bash -c "qpdf --check '$TMP/enc-ocr.pdf' | grep >/dev/null '^R = 6' && qpdf --check '$TMP/enc-ocr.pdf' | grep -i >/dev/null 'print low resolution: not allowed'"
pdftotext "$TMP/enc-ocr.pdf" "$TMP/enc.pdftotext"
check "encrypted PDF: pdftotext gives back our text" same_text "$TMP/enc.txt" "$TMP/enc.pdftotext"

# /Rotate 90: the page is rendered upright, and the layer turned back into the page's
# space: pdftotext reads it upright, each word where the OCR saw it.
"$OCRPOOL" ocr -q -l eng --format pdf,txt,json -o "$TMP/rot" "$F/eng-rot90.pdf" 2>/dev/null
check "/Rotate 90: qpdf --check clean" qpdf_ok "$TMP/rot/eng-rot90.pdf"
pdftotext "$TMP/rot/eng-rot90.pdf" "$TMP/rot.pdftotext"
check "/Rotate 90: pdftotext gives back our text" same_text "$TMP/rot/eng-rot90.txt" "$TMP/rot.pdftotext"
check "/Rotate 90: the first word at its box, on its line (within 1 pt)" python3 -c "
import json, re, subprocess
r = json.load(open('$TMP/rot/eng-rot90.json'))
ln = r['lines'][0]
w = ln['words'][0]
x = subprocess.run(['pdftotext', '-bbox', '$TMP/rot/eng-rot90.pdf', '-'], capture_output=True, text=True).stdout
m = re.search(r'<word xMin=\"([0-9.]+)\" yMin=\"([0-9.]+)\" xMax=\"[0-9.]+\" yMax=\"([0-9.]+)\">' + re.escape(w['text']) + '<', x)
s = 72.0 / 200  # rendered at pdf-dpi 200
want = (w['bbox'][0] * s, ln['bbox'][1] * s, ln['bbox'][3] * s)
got = tuple(float(v) for v in m.groups())
print('# first word', w['text'], 'x, line top, line bottom', want, 'pdftotext', got)
assert all(abs(a - b) < 1.0 for a, b in zip(want, got)), (want, got)
"

# ---- Image inputs ---------------------------------------------------------------------
"$OCRPOOL" ocr -q -l eng --format pdf,txt -o "$TMP/img" "$F/eng.jpg" "$F/eng.png" "$F/two.tif" \
    "$F/eng-exif6.jpg" 2>"$TMP/img.err"
rc=$?
check "images: exit 0 (got $rc), one PDF each" \
    bash -c "[ $rc -eq 0 ] && [ \$(ls '$TMP/img'/*.pdf | wc -l) -eq 4 ]"
for p in "$TMP"/img/*.pdf; do
    check "images: $(basename "$p"): qpdf --check clean" qpdf_ok "$p"
done
pdfimages -all "$TMP/img/eng.pdf" "$TMP/jpg"
check "JPEG: passed through byte for byte (DCTDecode)" cmp "$F/eng.jpg" "$TMP/jpg-000.jpg"
check "JPEG: the page is the image's size at its dpi (1592x645 at 300: 382.08 x 154.8 pt)" \
    bash -c "pdfinfo '$TMP/img/eng.pdf' | grep >/dev/null 'Page size: *382.08 x 154.8 pts'"
pdftotext "$TMP/img/eng.pdf" "$TMP/jpg.pdftotext"
check "JPEG: pdftotext gives back our text" same_text "$TMP/img/eng.txt" "$TMP/jpg.pdftotext"
pdfimages -png "$TMP/img/eng-2.pdf" "$TMP/png"
check "PNG: losslessly (Flate), the same pixels" /usr/bin/python3 -c "
from PIL import Image, ImageChops
a = Image.open('$F/eng.png').convert('L'); b = Image.open('$TMP/png-000.png').convert('L')
assert a.size == b.size and ImageChops.difference(a, b).getbbox() is None"
check "PNG: the image is Flate, not JPEG" bash -c "pdfimages -list '$TMP/img/eng-2.pdf' | tail -1 | grep >/dev/null ' image '"
check "two-page TIFF: one PDF of 2 pages" bash -c "pdfinfo '$TMP/img/two.pdf' | grep >/dev/null '^Pages: *2$'"
pdftotext -f 1 -l 1 "$TMP/img/two.pdf" "$TMP/two1.pdftotext"
check "two-page TIFF: page 1's text is page 1's" same_text "$TMP/img/two-p1.txt" "$TMP/two1.pdftotext"
check "EXIF-turned JPEG: re-encoded losslessly as shown upright, text read back" \
    bash -c "pdfimages -list '$TMP/img/eng-exif6.pdf' | tail -1 | grep >/dev/null ' image ' && pdftotext '$TMP/img/eng-exif6.pdf' - | grep >/dev/null 'quick brown fox'"

# ---- A book: interrupted, resumed, assembled once its last page is done --------------
: >"$TMP/book.err"
OCRPOOL_FAULT=sleep:1:page setsid "$OCRPOOL" ocr -v -j 1 -l eng+san --output-pdf "$TMP/book.pdf" \
    --sidecar "$TMP/book1.txt" --queue "$TMP/book.db" "$F/book-scan.pdf" 2>"$TMP/book.err" &
pid=$!
PIDS+=("$pid")
wait_log "$TMP/book.err" "page [0-9]: .* lines" 90
kill -INT -- -"$pid"
wait "$pid"
rc=$?
check "book interrupted: exit 1 (got $rc), no PDF yet" bash -c "[ $rc -eq 1 ] && [ ! -e '$TMP/book.pdf' ]"
"$OCRPOOL" ocr -v -j 2 -l eng+san --output-pdf "$TMP/book.pdf" --sidecar "$TMP/book.txt" \
    --queue "$TMP/book.db" "$F/book-scan.pdf" 2>"$TMP/book2.err"
rc=$?
grep -v ' lines, ' "$TMP/book2.err" | sed 's/^/# /'
check "book resumed: exit 0 (got $rc), resumed" \
    bash -c "[ $rc -eq 0 ] && grep -Eq 'resuming: [1-3] of 4 pages done already' '$TMP/book2.err'"
check "book resumed: the PDF assembled, 4 pages, qpdf --check clean" \
    bash -c "pdfinfo '$TMP/book.pdf' | grep >/dev/null '^Pages: *4$'" && qpdf_ok "$TMP/book.pdf"
python3 -c "
import sys
for i, t in enumerate(open('$TMP/book.txt', encoding='utf-8').read().split('\f')):
    open('$TMP/book-p%d.txt' % (i + 1), 'w', encoding='utf-8').write(t)"
for n in 1 2 3 4; do
    pdftotext -f $n -l $n "$TMP/book.pdf" "$TMP/book-p$n.pdftotext"
    check "book: page $n's layer is page $n's text" same_text "$TMP/book-p$n.txt" "$TMP/book-p$n.pdftotext"
done
mtime=$(stat -c %Y.%y "$TMP/book.pdf")
"$OCRPOOL" ocr -q -l eng+san --output-pdf "$TMP/book.pdf" --queue "$TMP/book.db" \
    "$F/book-scan.pdf" >/dev/null 2>&1
check "book run again, nothing left to do: the PDF kept as it is" test "$(stat -c %Y.%y "$TMP/book.pdf")" = "$mtime"
rm "$TMP/book.pdf"
"$OCRPOOL" ocr -q -l eng+san --output-pdf "$TMP/book.pdf" --queue "$TMP/book.db" \
    "$F/book-scan.pdf" >/dev/null 2>&1
check "book run again after the PDF was removed: made again from the queue" qpdf_ok "$TMP/book.pdf"

# ---- ocrpool result GROUP --format pdf ------------------------------------------------
group=$("$OCRPOOL" status --broker "sqlite://$TMP/san/.ocrpool-queue.db" --json --tasks |
    python3 -c "import json, sys; print(json.load(sys.stdin)['tasks'][0]['group'])")
"$OCRPOOL" result --broker "sqlite://$TMP/san/.ocrpool-queue.db" --format pdf "$group" \
    >"$TMP/group.pdf" 2>"$TMP/group.err"
rc=$?
check "result GROUP --format pdf: exit 0 (got $rc), qpdf --check clean" \
    bash -c "[ $rc -eq 0 ]" && qpdf_ok "$TMP/group.pdf"
check "result GROUP --format pdf: the same PDF as ocr made" cmp "$TMP/group.pdf" "$TMP/san/san-scan.pdf"
"$OCRPOOL" result --broker "sqlite://$TMP/san/.ocrpool-queue.db" --format txt "$group" >"$TMP/group.txt"
check "result GROUP --format txt: the group's text" same_text "$TMP/san/san-scan.txt" "$TMP/group.txt"
id=$("$OCRPOOL" status --broker "sqlite://$TMP/san/.ocrpool-queue.db" --json --tasks |
    python3 -c "import json, sys; print(json.load(sys.stdin)['tasks'][0]['id'])")
"$OCRPOOL" result --broker "sqlite://$TMP/san/.ocrpool-queue.db" --format txt "$id" >"$TMP/task.txt"
check "result TASK_ID still a page's result" same_text "$TMP/san/san-scan.txt" "$TMP/task.txt"
"$OCRPOOL" result --broker "sqlite://$TMP/san/.ocrpool-queue.db" --format pdf no-such-group \
    >/dev/null 2>"$TMP/nogroup.err"
rc=$?
check "result --format pdf of no group: exit 1 (got $rc), said" \
    bash -c "[ $rc -eq 1 ] && grep -q 'no such group' '$TMP/nogroup.err'"
img_group=$("$OCRPOOL" status --broker "sqlite://$TMP/img/.ocrpool-queue.db" --json --tasks |
    python3 -c "import json, sys; print(json.load(sys.stdin)['tasks'][0]['group'])")
"$OCRPOOL" result --broker "sqlite://$TMP/img/.ocrpool-queue.db" --format pdf "$img_group" \
    >/dev/null 2>"$TMP/several.err"
rc=$?
check "result --format pdf of a group of several documents: exit 1 (got $rc), said" \
    bash -c "[ $rc -eq 1 ] && grep -q 'holds several' '$TMP/several.err'"

# ---- GET /v1/groups/ID/result?format=pdf ----------------------------------------------
export XDG_RUNTIME_DIR=$TMP/run
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
port=$(freeport)
"$OCRPOOL" serve --listen "127.0.0.1:$port" --broker "sqlite://$TMP/http.db" -c 2 \
    --allow-root "$F" --spool-dir "$TMP/spool" >"$TMP/serve.log" 2>&1 &
PIDS+=("$!")
cat >"$TMP/httplib.py" <<'PY'
import json, os, subprocess, sys, time, urllib.error, urllib.request
base, fix, tmp = sys.argv[1:4]

def call(method, path, body=None, ctype=None):
    ctype = ctype or ("application/json" if body else None)
    r = urllib.request.Request(base + path, data=body, method=method,
                               headers={"Content-Type": ctype} if ctype else {})
    try:
        with urllib.request.urlopen(r, timeout=60) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()

def check(name, ok, detail=""):
    print(("ok - " if ok else "not ok - ") + name + ("" if ok else "  # %r" % (detail,)))
    return ok

def upload(path, files, fields=()):
    """POST path, multipart: files (paths) and form fields (name, value)."""
    b = b"----pdftest"
    body = b""
    for name, value in fields:
        body += b"--" + b + b'\r\nContent-Disposition: form-data; name="' + name.encode() + \
            b'"\r\n\r\n' + value.encode() + b"\r\n"
    for f in files:
        body += b"--" + b + b'\r\nContent-Disposition: form-data; name="file"; filename="' + \
            os.path.basename(f).encode() + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + \
            open(f, "rb").read() + b"\r\n"
    return call("POST", path, body + b"--" + b + b"--\r\n", "multipart/form-data; boundary=" + b.decode())

def wait_group(g, seconds=120):
    for _ in range(seconds * 10):
        st = json.loads(call("GET", "/v1/groups/" + g)[2])
        if st.get("done", 0) + st.get("failed", 0) >= st.get("total", 1):
            return st
        time.sleep(0.1)
    return st

def qpdf_clean(path):
    chk = subprocess.run(["qpdf", "--check", path], capture_output=True, text=True)
    return chk.returncode == 0 and "warning" not in chk.stdout.lower(), chk.stdout[-300:]

def group_text(g):
    """The group's pages' text (txt renderings, in page order)."""
    pages = sorted(json.loads(call("GET", "/v1/groups/" + g)[2])["pages"], key=lambda p: p["page"])
    return " ".join(call("GET", "/v1/jobs/%s/result?format=txt" % p["id"])[2].decode() for p in pages)

for _ in range(100):
    try:
        if call("GET", "/healthz")[0] == 200:
            break
    except OSError:
        pass
    time.sleep(0.1)
PY
python3 - "http://127.0.0.1:$port" "$F" "$TMP" <<'PY' || _failed=1
import sys; exec(open(sys.argv[3] + "/httplib.py").read())
s, _, b = call("POST", "/v1/jobs?lang=tam", json.dumps({"paths": [fix + "/tam-scan.pdf"]}).encode())
ok = check("POST /v1/jobs (a path): 202", s == 202, (s, b[:200]))
g = json.loads(b)["group"] if ok else "none"
for _ in range(600):
    st = json.loads(call("GET", "/v1/groups/" + g)[2])
    if st.get("done", 0) + st.get("failed", 0) >= st.get("total", 1):
        break
    time.sleep(0.1)
s, ct, pdf = call("GET", "/v1/groups/%s/result?format=pdf" % g)
check("GET /v1/groups/ID/result?format=pdf: 200 application/pdf", s == 200 and ct == "application/pdf", (s, ct, pdf[:200]))
open(tmp + "/http.pdf", "wb").write(pdf)
chk = subprocess.run(["qpdf", "--check", tmp + "/http.pdf"], capture_output=True, text=True)
check("GET ...?format=pdf: qpdf --check clean", chk.returncode == 0 and "warning" not in chk.stdout.lower(), chk.stdout[-300:])
tid = json.loads(call("GET", "/v1/groups/" + g)[2])["pages"][0]["id"]
ours = call("GET", "/v1/jobs/%s/result?format=txt" % tid)[2].decode()
got = subprocess.run(["pdftotext", tmp + "/http.pdf", "-"], capture_output=True, text=True).stdout
check("GET ...?format=pdf: pdftotext gives back the job's Tamil text", ours.split() == got.split(), (ours[:100], got[:100]))
s, _, b = call("GET", "/v1/groups/no-such-group/result?format=pdf")
check("GET ...?format=pdf of no group: 404", s == 404, (s, b[:200]))
s, _, b = call("GET", "/v1/groups/%s/result?format=hocr" % g)
check("GET /v1/groups/ID/result?format=hocr: 400", s == 400, (s, b[:200]))

# Uploads sent with pdf=1: a Sanskrit PDF (the form field), a JPEG (the query); and one
# sent without it, whose upload goes once its page is done, PDF or not.
spool = tmp + "/spool"
s, _, b = upload("/v1/jobs?lang=san", [fix + "/san-scan.pdf"], [("pdf", "1")])
ok = check("POST /v1/jobs, a Sanskrit PDF, form field pdf=1: 202", s == 202, (s, b[:200]))
gs = json.loads(b)["group"] if ok else "none"
s, _, b = upload("/v1/jobs?lang=eng&pdf=1", [fix + "/eng.jpg"])
ok = check("POST /v1/jobs?pdf=1, a JPEG: 202", s == 202, (s, b[:200]))
gj = json.loads(b)["group"] if ok else "none"
s, _, b = upload("/v1/jobs?lang=eng", [fix + "/eng.jpg"])
ok = check("POST /v1/jobs, a JPEG without pdf=1: 202", s == 202, (s, b[:200]))
gn = json.loads(b)["group"] if ok else "none"
s, _, b = upload("/v1/jobs?lang=eng", [fix + "/eng.jpg", fix + "/eng.png"], [("pdf", "1")])
check("POST /v1/jobs, two files with pdf=1: 400, said", s == 400 and b"one file" in b, (s, b[:200]))
s, _, b = upload("/v1/jobs?lang=eng", [fix + "/eng.jpg"], [("pdf", "maybe")])
check("POST /v1/jobs, pdf=maybe: 400", s == 400, (s, b[:200]))
spooled = sorted(os.listdir(spool))
check("pdf=1 jobs noted in the spool's pdf/ (a job each)",
      len([n for n in os.listdir(spool + "/pdf") if n.endswith(".job")]) == 2, spooled)
for g in (gs, gj, gn):
    wait_group(g)
# The sweep looks every 2 s: each PDF is made, and the uploads deleted, within a look of
# their last page.
t0 = time.time()
while time.time() - t0 < 10:
    left = [n for n in os.listdir(spool) if n != "pdf"]
    pdfs = sorted(n for n in os.listdir(spool + "/pdf"))
    if not left and pdfs == sorted([gs + ".pdf", gj + ".pdf"]):
        break
    time.sleep(0.1)
print("# spool %.1f s after the pages were done: %s, pdf/: %s" % (time.time() - t0, left, pdfs))
check("uploads deleted once their pages are done (pdf=1 or not)", not left, left)
check("pdf=1: each PDF made once its pages are done, kept in pdf/ (no job left)",
      pdfs == sorted([gs + ".pdf", gj + ".pdf"]), pdfs)
first = {}  # each PDF's first download: the node deletes it 30 s after that
for g, name, lang in ((gs, "san-scan.pdf", "Sanskrit"), (gj, "eng.jpg", "English")):
    first[g] = time.time()
    s, ct, pdf = call("GET", "/v1/groups/%s/result?format=pdf" % g)
    check("upload %s: GET ?format=pdf: 200 application/pdf" % name, s == 200 and ct == "application/pdf", (s, ct, pdf[:200]))
    out = "%s/up-%s.pdf" % (tmp, name)
    open(out, "wb").write(pdf)
    print("# upload %s: %d bytes, its searchable PDF %d bytes" % (name, os.path.getsize(fix + "/" + name), len(pdf)))
    check("upload %s: qpdf --check clean" % name, *qpdf_clean(out))
    ours = group_text(g)
    got = subprocess.run(["pdftotext", "-enc", "UTF-8", out, "-"], capture_output=True, text=True).stdout
    check("upload %s: pdftotext gives back the job's %s text" % (name, lang),
          ours.split() == got.split() and len(ours.split()) > 5, (ours[:100], got[:100]))
    s, _, again = call("GET", "/v1/groups/%s/result?format=pdf" % g)
    check("upload %s: a second GET (within 30 s): the same PDF" % name, s == 200 and again == pdf, s)
subprocess.run(["pdfimages", "-all", tmp + "/up-eng.jpg.pdf", tmp + "/up-jpg"])
check("upload eng.jpg: the JPEG passed through byte for byte",
      open(tmp + "/up-jpg-000.jpg", "rb").read() == open(fix + "/eng.jpg", "rb").read())
s, _, b = call("GET", "/v1/groups/%s/result?format=pdf" % gn)
check("upload without pdf=1: GET ?format=pdf: 410 (its upload is gone)", s == 410, (s, b[:200]))
open(tmp + "/fetched", "w").write("%s %s %f %f" % (gs, gj, first[gs], first[gj]))
PY

# ---- Uploads' PDFs go: unfetched, after the result lifetime (a node with
# --result-expires 8); fetched, 30 s after the first download (the node above) -----------
port2=$(freeport)
"$OCRPOOL" serve --listen "127.0.0.1:$port2" --broker "sqlite://$TMP/http2.db" -c 1 \
    --spool-dir "$TMP/spool2" --result-expires 8 >"$TMP/serve2.log" 2>&1 &
PIDS+=("$!")
python3 - "http://127.0.0.1:$port2" "$F" "$TMP" "http://127.0.0.1:$port" <<'PY' || _failed=1
import sys; exec(open(sys.argv[3] + "/httplib.py").read())
s, _, b = upload("/v1/jobs?lang=eng", [fix + "/eng.png"], [("pdf", "true")])
ok = check("result-expires 8: POST /v1/jobs pdf=true, a PNG: 202", s == 202, (s, b[:200]))
g = json.loads(b)["group"] if ok else "none"
wait_group(g)
pdf = tmp + "/spool2/pdf/" + g + ".pdf"
t0 = time.time()
while time.time() - t0 < 10 and not os.path.exists(pdf):
    time.sleep(0.1)
made = os.path.getmtime(pdf) if os.path.exists(pdf) else time.time()
check("result-expires 8: its PDF made, its upload deleted",
      os.path.exists(pdf) and os.listdir(tmp + "/spool2") == ["pdf"], os.listdir(tmp + "/spool2"))
while time.time() - made < 20 and os.path.exists(pdf):
    time.sleep(0.2)
print("# result-expires 8: the unfetched PDF went %.1f s after it was made" % (time.time() - made))
check("result-expires 8: the unfetched PDF deleted after the result lifetime (and a sweep)",
      not os.path.exists(pdf) and 6 <= time.time() - made <= 12, time.time() - made)
check("result-expires 8: pdf/ is empty then", os.listdir(tmp + "/spool2/pdf") == [], os.listdir(tmp + "/spool2/pdf"))

# The node above: its two PDFs, fetched, go 30 s after their first download.
base = sys.argv[4]
# Each PDF's age when it went, from its own first download (timed before the GET was sent,
# not after the checks that followed it: those took seconds on a busy machine).
gs, gj, ts, tj = open(tmp + "/fetched").read().split()
spool = tmp + "/spool/pdf/"
went = {}
while time.time() - float(tj) < 60 and len(went) < 2:
    for g, t in ((gs, float(ts)), (gj, float(tj))):
        if g not in went and not os.path.exists(spool + g + ".pdf"):
            went[g] = time.time() - t
    time.sleep(0.2)
print("# fetched PDFs went %s s after their first download" %
      [round(went[g], 1) if g in went else None for g in (gs, gj)])
check("fetched PDFs deleted 30 s after their first download (within a sweep)",
      len(went) == 2 and min(went.values()) >= 28, (went, os.listdir(spool)))
s, _, b = call("GET", "/v1/groups/%s/result?format=pdf" % gs)
check("GET ?format=pdf after that: 410, said why", s == 410 and b"after its first download" in b, (s, b[:200]))
PY

# ---- Turned and tilted pages: the layer along the reading direction ---------------------
# Pages turned 90/180/270 (images, and one as a PDF page with no /Rotate) and tilted 5
# degrees (and turned and tilted), read with rotate-pages and deskew (the defaults): each
# word is drawn along the page's reading direction. pdftotext gives back our lines; poppler
# 22 lists the lines of text reading upwards last first (compared as a set there), and
# splits a tilted word where its baseline has drifted half a point: a tilted page is read
# with -raw (content order), its characters compared spaces aside (a turned and tilted
# page's words come out in pieces), and word for word when it was not turned. Every word
# pdftotext finds lies in the box of one of our words holding its text (within 3 pt), and
# almost all of our words are found.
/usr/bin/python3 -c "
from PIL import Image
Image.open('$F/eng-rot90.png').save('$TMP/turned-in.pdf', resolution=300)"
"$OCRPOOL" ocr -q -l eng --format pdf,txt,json -o "$TMP/turn" "$F/eng-rot90.png" "$F/eng-rot180.png" \
    "$F/eng-rot270.png" "$F/eng-skew5.png" "$F/eng-rot90-skew4.png" "$TMP/turned-in.pdf" 2>"$TMP/turn.err"
rc=$?
check "turned and tilted pages: exit 0 (got $rc)" test $rc -eq 0
# lines FILE: its non-empty lines, whitespace squeezed, sorted.
lines() { tr -s ' \t\f' ' ' <"$1" | sed 's/^ //; s/ $//' | grep -v '^$' | sort; }
same_lines() {
    if [ "$(lines "$1")" = "$(lines "$2")" ]; then return 0; fi
    diff <(lines "$1") <(lines "$2") | head -10 | sed 's/^/# /'
    return 1
}
# same_chars A B: the same characters in the same order, whitespace aside.
same_chars() {
    if [ "$(tr -d ' \t\n\f' <"$1")" = "$(tr -d ' \t\n\f' <"$2")" ]; then return 0; fi
    echo "# $(tr -d ' \t\n\f' <"$1" | cut -c1-80)"
    echo "# $(tr -d ' \t\n\f' <"$2" | cut -c1-80)"
    return 1
}
# boxes_ok JSON PDF: pdftotext -bbox's words against the result's word boxes.
boxes_ok() {
    python3 - "$1" "$2" <<'PY'
import json, re, subprocess, sys
r = json.load(open(sys.argv[1]))
x = subprocess.run(["pdftotext", "-bbox", sys.argv[2], "-"], capture_output=True, text=True).stdout
pw, ph = (float(v) for v in re.search(r'<page width="([0-9.]+)" height="([0-9.]+)"', x).groups())
s = pw / r["width"]
ours = [(w["text"], [v * s for v in w["bbox"]]) for ln in r["lines"] for w in ln["words"]]
found, bad = set(), []
for m in re.finditer(r'<word xMin="([0-9.]+)" yMin="([0-9.]+)" xMax="([0-9.]+)" yMax="([0-9.]+)">([^<]*)<', x):
    x0, y0, x1, y1 = (float(v) for v in m.groups()[:4])
    t, cx, cy = m.group(5), (x0 + x1) / 2, (y0 + y1) / 2
    hit = [i for i, (text, b) in enumerate(ours) if t in text and b[0] - 3 <= cx <= b[2] + 3 and b[1] - 3 <= cy <= b[3] + 3]
    if hit:
        found.update(hit)
    else:
        bad.append((t, round(cx, 1), round(cy, 1)))
print("# rotation %s skew %s: %d of our %d words found, %d pdftotext words off their box %s" % (
    r["rotation"], r["skew"], len(found), len(ours), len(bad), bad[:5]))
assert not bad and len(found) >= 0.95 * len(ours) and len(ours) > 20
PY
}
declare -A want_rot=([eng-rot90]=270 [eng-rot180]=180 [eng-rot270]=90 [eng-skew5]=0 [eng-rot90-skew4]=270 [turned-in]=270)
for n in eng-rot90 eng-rot180 eng-rot270 eng-skew5 eng-rot90-skew4 turned-in; do
    j="$TMP/turn/$n.json" p="$TMP/turn/$n.pdf"
    rot=$(python3 -c "import json; print(json.load(open('$j'))['rotation'])" 2>/dev/null)
    skew=$(python3 -c "import json; print(json.load(open('$j'))['skew'])" 2>/dev/null)
    check "$n: read turned by ${want_rot[$n]} (got $rot, skew $skew)" test "$rot" = "${want_rot[$n]}"
    check "$n: qpdf --check clean" qpdf_ok "$p"
    pdftotext "$p" "$TMP/turn/$n.pdftotext"
    if python3 -c "import sys; sys.exit(0 if abs(float('$skew')) >= 0.5 else 1)"; then
        pdftotext -raw "$p" "$TMP/turn/$n.raw"
        check "$n: pdftotext -raw gives back our characters in order (spaces aside)" \
            same_chars "$TMP/turn/$n.txt" "$TMP/turn/$n.raw"
        if [ "$rot" = 0 ]; then
            check "$n: pdftotext -raw gives back our text" same_text "$TMP/turn/$n.txt" "$TMP/turn/$n.raw"
        fi
    elif [ "$rot" = 90 ]; then
        check "$n: pdftotext gives back our lines" same_lines "$TMP/turn/$n.txt" "$TMP/turn/$n.pdftotext"
    else
        check "$n: pdftotext gives back our text" same_text "$TMP/turn/$n.txt" "$TMP/turn/$n.pdftotext"
    fi
    check "$n: pdftotext's words at our boxes (within 3 pt)" boxes_ok "$j" "$p"
done

# ---- Celery: output_pdf, the document's PDF written by the node -------------------------
PY=/usr/bin/python3 # Debian's, with python3-celery
if ! command -v redis-server >/dev/null || ! $PY -c 'import celery, redis' 2>/dev/null; then
    skip "Celery output_pdf: redis-server and python3-celery are not installed"
    finish
fi
RPORT=$(freeport)
RURL="redis://127.0.0.1:$RPORT/0"
mkdir -p "$TMP/redis" "$TMP/celery"
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$TMP/redis" --save "" --appendonly no \
    --daemonize no >"$TMP/redis.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do redis-cli -p "$RPORT" ping 2>/dev/null | grep >/dev/null PONG && break; sleep 0.1; done
# Reads under $F and $TMP/celery; writes PDFs under $TMP/celery/out only.
mkdir -p "$TMP/celery/out"
OCRPOOL_LOG_LEVEL=info "$OCRPOOL" worker --broker "$RURL" -c 2 --allow-root "$F:$TMP/celery" \
    --output-root "$TMP/celery/out" >"$TMP/worker.log" 2>&1 &
WPID=$!
PIDS+=("$WPID")
wait_log "$TMP/worker.log" "node .*[0-9] workers\?, prefetch" 30
$PY - "$RURL" "$F/book-scan.pdf" "$TMP/celery" "$F" <<'PY' || _failed=1
import filecmp, os, shutil, subprocess, sys, time
from celery import Celery, group
url, book, tmp, fix = sys.argv[1:5]
out = tmp + "/out"
app = Celery("client", broker=url, backend=url)
TASK = "ocrpool.ocr_page"

def check(name, ok, detail=""):
    print(("ok - " if ok else "not ok - ") + name + ("" if ok else "  # %r" % (detail,)))
    return ok

def send_book(gid, pdf, src=book):
    """All 4 pages of src as group gid, each naming pdf; waits until they are done."""
    rs = [app.send_task(TASK, args=[src, "eng"], kwargs={"page": i, "output_pdf": pdf},
                        group_id=gid) for i in range(1, 5)]
    return [r.get(timeout=300) for r in rs]

pdf = out + "/book.pdf"
g = group(app.signature(TASK, args=[book, "eng+san"], kwargs={"page": i, "output_pdf": pdf})
          for i in range(1, 5)).apply_async()
texts = [r["text"] for r in g.get(timeout=300)]
for _ in range(300):
    if os.path.exists(pdf):
        break
    time.sleep(0.1)
check("Celery output_pdf: the document's PDF written once its 4 pages are done", os.path.exists(pdf))
chk = subprocess.run(["qpdf", "--check", pdf], capture_output=True, text=True)
check("Celery output_pdf: qpdf --check clean", chk.returncode == 0 and "warning" not in chk.stdout.lower(), chk.stdout[-300:])
for n in range(1, 5):
    got = subprocess.run(["pdftotext", "-f", str(n), "-l", str(n), pdf, "-"], capture_output=True, text=True).stdout
    check("Celery output_pdf: page %d's layer is page %d's text" % (n, n), got.split() == texts[n - 1].split(), (got[:80], texts[n - 1][:80]))
check("Celery output_pdf: nothing else left in the folder (no temporary file)",
      sorted(os.listdir(out)) == ["book.pdf"], os.listdir(out))

# Each case below sends all 4 pages, so that only the output check can stop the write.
bad = "/var/tmp/ocrpool-test-%d.pdf" % os.getpid()
send_book("g-outside", bad)
# Under --allow-root (a folder tasks read from), not under --output-root.
readable = fix + "/ocrpool-test-%d.pdf" % os.getpid()
send_book("g-readroot", readable)
# The last component a symlink to a file outside the roots.
victim = tmp + "/victim.txt"
open(victim, "w").write("keep")
link = out + "/link.pdf"
os.symlink(victim, link)
send_book("g-symlink", link)
# A file there already (not made by this group), and the task's own source.
there = out + "/there.pdf"
open(there, "w").write("keep")
send_book("g-there", there)
src = out + "/source.pdf"
shutil.copyfile(book, src)
send_book("g-source", src, src)
r = app.send_task(TASK, args=[book, "eng"], kwargs={"page": 1, "output_pdf": "book.pdf"})
try:
    r.get(timeout=120)
    check("Celery output_pdf: a relative path is refused (ValueError)", False)
except Exception as e:
    check("Celery output_pdf: a relative path is refused (ValueError)", type(e).__name__ == "ValueError" and "absolute path" in str(e), repr(e))
time.sleep(3)  # a job that would write has had its time
check("Celery output_pdf: a folder outside --output-root: nothing written", not os.path.exists(bad))
check("Celery output_pdf: a folder under --allow-root only: nothing written", not os.path.exists(readable))
if os.path.exists(readable):
    os.unlink(readable)
check("Celery output_pdf: a symlink at the path: left as it is, its target untouched",
      os.path.islink(link) and open(victim, "rb").read() == b"keep", (os.path.islink(link), open(victim, "rb").read()[:20]))
check("Celery output_pdf: a file at the path: not replaced", open(there, "rb").read() == b"keep")
check("Celery output_pdf: the source at the path: not replaced", filecmp.cmp(src, book, shallow=False))
check("Celery output_pdf: no temporary file left",
      sorted(os.listdir(out)) == ["book.pdf", "link.pdf", "source.pdf", "there.pdf"], os.listdir(out))
PY
check "Celery output_pdf outside --output-root: said in the node's log" \
    wait_log "$TMP/worker.log" "group g-outside: no PDF: output_pdf /var/tmp/.*not under --output-root" 30
check "Celery output_pdf under --allow-root only: said in the node's log" \
    wait_log "$TMP/worker.log" "group g-readroot: no PDF: .*not under --output-root" 30
check "Celery output_pdf over a symlink: said in the node's log" \
    wait_log "$TMP/worker.log" "group g-symlink: no PDF: .*never replaces a file" 30
check "Celery output_pdf: a refused group is said once, not once per page" \
    test "$(grep -c 'group g-there: no PDF' "$TMP/worker.log")" = 1
check "Celery output_pdf: the book's PDF made once" \
    test "$(grep -c 'searchable PDF .*/out/book.pdf' "$TMP/worker.log")" = 1
# Jobs are the node's children, reaped in its loop: none is left a zombie.
check "Celery output_pdf: no PDF job left unreaped" \
    test -z "$(ps --ppid "$WPID" -o stat= | grep Z)"

# ---- pdf=1 on Redis: the API without workers, the node above reads its spool ----------
# (under that node's --allow-root). The sweep tells a finished page from one not started
# by what Redis keeps: the PDF is made, the upload deleted, as on SQLite.
port3=$(freeport)
"$OCRPOOL" serve --no-workers --listen "127.0.0.1:$port3" --broker "$RURL" \
    --spool-dir "$TMP/celery/spool" >"$TMP/serve3.log" 2>&1 &
PIDS+=("$!")
python3 - "http://127.0.0.1:$port3" "$F" "$TMP" <<'PY' || _failed=1
import sys; exec(open(sys.argv[3] + "/httplib.py").read())
s, _, b = upload("/v1/jobs?lang=tam", [fix + "/tam-scan.pdf"], [("pdf", "1")])
ok = check("Redis: POST /v1/jobs pdf=1, a Tamil PDF: 202", s == 202, (s, b[:200]))
g = json.loads(b)["group"] if ok else "none"
wait_group(g)
spool = tmp + "/celery/spool"
t0 = time.time()
while time.time() - t0 < 10 and (os.listdir(spool) != ["pdf"] or not os.path.exists(spool + "/pdf/" + g + ".pdf")):
    time.sleep(0.1)
check("Redis: its PDF made, its upload deleted (within a sweep)",
      os.listdir(spool) == ["pdf"] and os.path.exists(spool + "/pdf/" + g + ".pdf"), os.listdir(spool))
s, ct, pdf = call("GET", "/v1/groups/%s/result?format=pdf" % g)
check("Redis: GET ?format=pdf: 200 application/pdf", s == 200 and ct == "application/pdf", (s, ct, pdf[:200]))
open(tmp + "/redis-up.pdf", "wb").write(pdf)
check("Redis: qpdf --check clean", *qpdf_clean(tmp + "/redis-up.pdf"))
ours = group_text(g)
got = subprocess.run(["pdftotext", "-enc", "UTF-8", tmp + "/redis-up.pdf", "-"], capture_output=True, text=True).stdout
check("Redis: pdftotext gives back the job's Tamil text", ours.split() == got.split() and len(ours.split()) > 5, (ours[:100], got[:100]))
PY

finish
