#!/usr/bin/env python3
"""http_check.py BASE TOKEN FIXTURES [SPOOL]: every endpoint of `ocrpool serve`, as a
client would call it, including bad requests (bytes that are not UTF-8, a client that
stalls: the server runs with --connection-timeout 2). SPOOL: the server's spool folder,
to see that a refused upload leaves nothing there. Prints TAP-ish lines."""
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request

BASE, TOKEN, F = sys.argv[1], sys.argv[2], sys.argv[3]
SPOOL = sys.argv[4] if len(sys.argv) > 4 else None
failed = 0


def call(method, path, body=None, headers=None, token=TOKEN):
    h = dict(headers or {})
    if token:
        h["Authorization"] = "Bearer " + token
    r = urllib.request.Request(BASE + path, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(r, timeout=60) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def check(name, cond, detail=""):
    global failed
    print(("ok - " if cond else "not ok - ") + name + ("" if cond else "  # " + str(detail)[:300]))
    failed |= not cond


def multipart(files, field=b"file"):
    b = b"----ocrpooltestboundary"
    out = b""
    for name, data in files:
        name = name if isinstance(name, bytes) else name.encode()
        out += b"--" + b + b"\r\nContent-Disposition: form-data; name=\"" + field + b"\"; filename=\"" + \
            name + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    out += b"--" + b + b"--\r\n"
    return out, {"Content-Type": "multipart/form-data; boundary=" + b.decode()}


png = open(F + "/eng.png", "rb").read()
s, _, b = call("GET", "/healthz", token=None)
check("/healthz without a token: 200", s == 200 and b == b"ok\n", (s, b))
for path in ("/readyz", "/metrics", "/v1/stats", "/v1/failures", "/v1/jobs/x", "/v1/groups/x"):
    s, _, _ = call("GET", path, token=None)
    check(path + " without a token: 401", s == 401, s)
s, _, _ = call("GET", "/readyz", token="wrong")
check("a wrong token: 401", s == 401, s)
# Ready once the node's master answers (its engine loads first): 503 until then.
for _ in range(600):
    s, _, b = call("GET", "/readyz")
    if s == 200:
        break
    assert s == 503, (s, b)
    time.sleep(0.1)
check("/readyz: 200 ready", s == 200 and json.loads(b)["ready"] is True, (s, b))

# OCR now: a raw body, and a multipart upload.
s, ct, b = call("POST", "/v1/ocr?lang=eng", png, {"Content-Type": "image/png"})
check("POST /v1/ocr raw: 200 with the page JSON",
      s == 200 and ct.startswith("application/json") and "quick brown fox" in json.loads(b)["text"], (s, b[:200]))
body, h = multipart([("page.png", png)])
s, _, b = call("POST", "/v1/ocr", body, h)
check("POST /v1/ocr multipart: 200", s == 200 and "quick brown fox" in json.loads(b)["text"], (s, b[:200]))
s, _, b = call("POST", "/v1/ocr", b"not an image at all", {"Content-Type": "image/png"})
check("POST /v1/ocr with a text body: 422 with the reason", s == 422 and b"not a supported image" in b, (s, b))

# Jobs: multipart files, JSON paths under --allow-root.
body, h = multipart([("a.png", png), ("two.tif", open(F + "/two.tif", "rb").read())])
s, _, b = call("POST", "/v1/jobs", body, h)
ok = s == 202
j = json.loads(b) if ok else {}
check("POST /v1/jobs multipart: 202 with a group and 3 page tasks", ok and len(j["tasks"]) == 3, (s, b[:300]))
s, _, b = call("POST", "/v1/jobs", json.dumps({"paths": [F + "/two.tif"]}).encode(),
               {"Content-Type": "application/json"})
j2 = json.loads(b) if s == 202 else {}
check("POST /v1/jobs JSON paths: 202", s == 202 and len(j2.get("tasks", [])) == 2, (s, b[:300]))
for _ in range(200):
    s, _, b = call("GET", "/v1/groups/" + j["group"])
    g = json.loads(b)
    if g.get("done", 0) + g.get("failed", 0) == 3:
        break
    time.sleep(0.1)
check("GET /v1/groups/ID: counts and per-page states", s == 200 and g["done"] == 3 and
      [p["page"] for p in g["pages"]] == [1, 1, 2] and all(p["state"] == "done" for p in g["pages"]), g)
# A page that queues (its header reads) but cannot be decoded fails with the kind "input".
s, _, b = call("POST", "/v1/jobs", json.dumps({"paths": [F + "/bad/truncated.png"]}).encode(),
               {"Content-Type": "application/json"})
bad = json.loads(b)["tasks"][0]["id"] if s == 202 else "none"
for _ in range(200):
    s, _, b = call("GET", "/v1/jobs/" + bad)
    if s != 200 or json.loads(b)["state"] in ("failed", "buried"):
        break
    time.sleep(0.1)
jb = json.loads(b) if s == 200 else {}
check("GET /v1/jobs/ID of an undecodable page: failed, failure kind input, with the reason",
      jb.get("state") == "failed" and jb.get("failure") == "input" and jb.get("error"), (s, b[:300]))
s, _, b = call("GET", "/v1/failures")
fl = [f for f in json.loads(b) if f["id"] == bad] if s == 200 else []
check("GET /v1/failures: the page with its failure kind", len(fl) == 1 and fl[0]["failure"] == "input", (s, b[:300]))
tid = j["tasks"][0]["id"]
s, _, b = call("GET", "/v1/jobs/" + tid)
check("GET /v1/jobs/ID: state done", s == 200 and json.loads(b)["state"] == "done", (s, b))
m = re.search(rb'"started":([-0-9.eE+]+)', b)
check("GET /v1/jobs/ID: the started time in full (10+ digits, no exponent)",
      m and b"e" not in m.group(1).lower() and len(re.sub(rb"[^0-9]", b"", m.group(1))) >= 10, b[:300])
for fmt, ctype, mark in (("txt", "text/plain", b"quick brown fox"), ("json", "application/json", b'"lines"'),
                         ("hocr", "text/html", b"ocrx_word"), ("alto", "application/xml", b"<String"),
                         ("tsv", "text/tab-separated-values", b"level\tpage_num")):
    s, ct, b = call("GET", "/v1/jobs/%s/result?format=%s" % (tid, fmt))
    check("GET /v1/jobs/ID/result?format=" + fmt, s == 200 and ct.startswith(ctype) and mark in b, (s, ct, b[:100]))

# Bad requests.
s, _, b = call("POST", "/v1/jobs", b"{not json", {"Content-Type": "application/json"})
check("bad JSON: 400", s == 400, (s, b))
s, _, b = call("POST", "/v1/jobs", json.dumps({"paths": ["/etc/passwd"]}).encode(), {"Content-Type": "application/json"})
check("a path outside --allow-root: 403", s == 403 and b"path not allowed: /etc/passwd" in b, (s, b))
s, _, b = call("POST", "/v1/jobs", json.dumps({"paths": ["eng.png"]}).encode(), {"Content-Type": "application/json"})
check("a relative path: 400, said as one (not 'path not allowed')",
      s == 400 and b"relative path: eng.png" in b and b"not allowed" not in b, (s, b))
s, _, b = call("POST", "/v1/jobs", json.dumps({"paths": [F + "/../../../etc/passwd"]}).encode(),
               {"Content-Type": "application/json"})
check("a path escaping --allow-root with ..: 403", s == 403, (s, b))
s, _, b = call("POST", "/v1/jobs", json.dumps({"paths": [F + "/no-such-page.png", F]}).encode(),
               {"Content-Type": "application/json"})
check("a missing file or a folder under --allow-root: 403 with the same reason", s == 403 and
      b"path not allowed: " in b, (s, b))
# Over the cap by its Content-Length: refused before the body is read.
import http.client
from urllib.parse import urlparse
u = urlparse(BASE)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
conn.putrequest("POST", "/v1/ocr")
conn.putheader("Authorization", "Bearer " + TOKEN)
conn.putheader("Content-Type", "image/png")
conn.putheader("Content-Length", str(3 << 20))
conn.endheaders()
resp = conn.getresponse()
check("a body over --max-body (by its length): 413 before it is sent", resp.status == 413, resp.status)
conn.close()
# Over the cap without a length (chunked): refused once the cap is crossed.
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
def chunks():
    for _ in range(48):
        yield b"x" * 65536
try:
    conn.request("POST", "/v1/ocr", body=chunks(), headers={"Authorization": "Bearer " + TOKEN,
                 "Content-Type": "image/png", "Transfer-Encoding": "chunked"}, encode_chunked=True)
    st = conn.getresponse().status
except (BrokenPipeError, ConnectionResetError):
    st = "reset"
check("a chunked body over --max-body: 413", st == 413, st)
conn.close()
s, _, _ = call("GET", "/v1/jobs/no-such-id")
check("unknown job: 404", s == 404, s)
s, _, _ = call("GET", "/v1/groups/no-such-group")
check("unknown group: 404", s == 404, s)
s, _, _ = call("GET", "/nowhere")
check("unknown path: 404", s == 404, s)
# The route table's patterns: a wildcard is one whole segment, and nothing may follow a route.
for path in ("/v1/jobs/%s/other" % tid, "/v1/jobs/%s/result/more" % tid, "/v1/jobs/",
             "/v1/groups/a/b", "/v1/jobs/" + "x" * 100, "/healthz/x"):
    s, _, _ = call("GET", path)
    check("GET %s: 404" % path[:40], s == 404, s)
s, _, _ = call("POST", "/v1/jobs/" + tid)
check("POST to a GET route: 404", s == 404, s)
s, _, _ = call("DELETE", "/v1/jobs/" + tid)
check("a method not allowed: 405", s == 405, s)
s, _, b = call("GET", "/v1/jobs/%s/result?format=pdf" % tid)
check("an unknown format: 400", s == 400, (s, b))

# Strings that are not UTF-8 text: 400 with the reason, at once, and nothing queued
# (a filename of bytes 0xff 0xfe gave 202 with no tasks, and /v1/ocr then waited 360 s
# on SQLite for a NULL task id, or crashed the API process on Redis).
spool_before = sorted(os.listdir(SPOOL)) if SPOOL else []
for path in ("/v1/jobs", "/v1/ocr"):
    body, h = multipart([(b"a\xff\xfe.png", png)])
    t0 = time.time()
    s, _, b = call("POST", path, body, h)
    check("POST %s with a filename that is not UTF-8: 400 with the reason, at once" % path,
          s == 400 and b"not UTF-8" in b and time.time() - t0 < 10, (s, b[:200]))
body, h = multipart([("a.png", png)], field=b"f\xc0\xaf")
s, _, b = call("POST", "/v1/jobs", body, h)
check("a multipart field name that is not UTF-8 (overlong): 400", s == 400 and b"not UTF-8" in b, (s, b[:200]))
body, h = multipart([("a\x01.png", png)])
s, _, b = call("POST", "/v1/jobs", body, h)
check("a filename with a control character: 400", s == 400, (s, b[:200]))
s, _, b = call("POST", "/v1/ocr?lang=eng%FF", png, {"Content-Type": "image/png"})
check("a lang that is not UTF-8: 400", s == 400 and b"not UTF-8" in b, (s, b[:200]))
for lang in ("../../x", "eng/../../x", "+eng", "eng x"):
    body, h = multipart([("a.png", png)])
    s, _, b = call("POST", "/v1/jobs?lang=" + urllib.request.quote(lang), body, h)
    check("lang %r: 400" % lang, s == 400 and b"bad lang" in b, (s, b[:200]))
s, _, b = call("GET", "/v1/jobs/%FF%FE/result?format=txt")
check("a job id that is not UTF-8: 400", s == 400, (s, b[:200]))
s, _, b = call("GET", "/v1/groups/a%00b")
check("a group name with a NUL: 400 or 404, never a crash", s in (400, 404), (s, b[:200]))
s, _, b = call("GET", "/v1/jobs/%s/result?format=%%C3%%28" % tid)
check("a format that is not UTF-8: 400", s == 400, (s, b[:200]))
# /v1/ocr is one page: a document of several is refused before anything is queued.
body, h = multipart([("two.tif", open(F + "/two.tif", "rb").read())])
s, _, b = call("POST", "/v1/ocr", body, h)
check("POST /v1/ocr with 2 pages: 422 pointing at /v1/jobs", s == 422 and b"/v1/jobs" in b, (s, b[:300]))
body, h = multipart([("a.png", png), ("b.png", png)])
s, _, b = call("POST", "/v1/ocr", body, h)
check("POST /v1/ocr with 2 files: 422", s == 422 and b"/v1/jobs" in b, (s, b[:300]))
if SPOOL:
    new = set(os.listdir(SPOOL)) - set(spool_before)  # (the sweep may delete older ones)
    check("refused uploads leave nothing in the spool", not new, new)
s, _, b = call("GET", "/healthz", token=None)
check("the API still answers", s == 200, s)

# A client that sends half a request and stalls is dropped after --connection-timeout
# (2 s here), and others are served meanwhile.
def stall(data):
    sk = socket.create_connection((u.hostname, u.port), timeout=15)
    sk.sendall(data)
    return sk
stalled = [stall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
                 b"\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n0123456789"),
           stall(b"GET /v1/stats HTTP/1.1\r\nHost: x\r\nX-Half: ")]
t0 = time.time()
s, _, _ = call("GET", "/healthz", token=None)
check("while clients stall, another request is served at once", s == 200 and time.time() - t0 < 1.5, (s, time.time() - t0))
for name, sk in zip(("a body sent in part", "headers sent in part"), stalled):
    try:
        while sk.recv(65536):
            pass
        gone = time.time() - t0
    except socket.timeout:
        gone = None
    except ConnectionResetError:
        gone = time.time() - t0
    sk.close()
    check("a client that stalls after %s: dropped after the timeout (%s s)" % (name, gone and round(gone, 1)),
          gone is not None and 1.0 <= gone <= 8, gone)

# Metrics: Prometheus text with the series the issue names.
s, ct, b = call("GET", "/metrics")
t = b.decode()
names = ["ocrpool_tasks{state=\"done\"}", "ocrpool_pages_per_second", "ocrpool_page_duration_seconds_bucket{le=\"+Inf\"}",
         "ocrpool_worker_rss_bytes{pid=", "ocrpool_worker_pss_bytes{pid=", "ocrpool_recycles_total{reason=\"crashed\"}",
         "ocrpool_queue_depth", "ocrpool_memory_budget_bytes{kind=\"in_use\"}",
         "ocrpool_worker_gpu_memory_bytes{pid=", "ocrpool_http_restarts_total 0"]
check("/metrics: Prometheus text format with every series", s == 200 and ct.startswith("text/plain; version=0.0.4")
      and all(n in t for n in names), [n for n in names if n not in t])
done = [l for l in t.splitlines() if l.startswith("ocrpool_tasks{state=\"done\"}")]
check("/metrics: done tasks counted", done and int(done[0].split()[-1]) >= 5, done)
s, ct, b = call("GET", "/")
check("GET /: the dashboard page", s == 200 and ct.startswith("text/html") and b"<canvas id=\"chart\"" in b, (s, ct))
sys.exit(failed)
