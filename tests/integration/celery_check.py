"""The Python side of the Redis tests: Debian's Celery client (and redis-py)
talking to ocrpool's worker exactly as a Python web app would.

    celery_check.py URL one PATH [ENGINE]        send_task, AsyncResult.get (read by
                                                 ENGINE, when given)
    celery_check.py URL extras PNG PDF           inline bytes, formats, page, eta,
                                                 expires, bad arguments
    celery_check.py URL group N PATH...          a group of N; GroupResult progress
    celery_check.py URL send IDS PATH...         send one task per PATH, ids to IDS
    celery_check.py URL wait IDS SECONDS         every id SUCCESS (polling, survives
                                                 a Redis restart)
    celery_check.py URL watch IDS OUT SECONDS    subscribe to the result channels
                                                 first, then wait: each id must be
                                                 published SUCCESS exactly once
    celery_check.py URL started ID SECONDS       the id is seen STARTED, then SUCCESS
    celery_check.py URL result ID                print the stored result (JSON)

Exit status 0 when every assertion held; failures are printed with '#'.
"""
import datetime
import json
import sys
import threading
import time

from celery import Celery, group
import redis

URL = sys.argv[1]
app = Celery("client", broker=URL, backend=URL)
app.conf.broker_connection_retry_on_startup = True
TASK = "ocrpool.ocr_page"
failed = []


def expect(cond, what):
    print("# " + ("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failed.append(what)


def one(path, engine=None):
    r = app.send_task(TASK, args=[path, "eng"])
    res = r.get(timeout=90)
    expect(r.state == "SUCCESS", "state SUCCESS (got %s)" % r.state)
    if engine:
        expect(res.get("engine") == engine, "read by engine %s (got %s)" % (engine, res.get("engine")))
    expect("quick brown fox" in res.get("text", ""), "the page text came back")
    expect(res.get("page") == 1 and res.get("width", 0) > 0, "page number and size in the result")
    words = [w for ln in res.get("lines", []) for w in ln.get("words", [])]
    expect(len(words) > 5 and all("bbox" in w and "confidence" in w for w in words),
           "words with boxes and confidences (%d words)" % len(words))
    raw = redis.Redis.from_url(URL).get("celery-task-meta-" + r.id)
    meta = json.loads(raw)
    expect(set(meta) >= {"status", "result", "traceback", "children", "date_done", "task_id"},
           "the meta has Celery's fields: %s" % sorted(meta))
    ttl = redis.Redis.from_url(URL).ttl("celery-task-meta-" + r.id)
    expect(0 < ttl <= 86400, "the result expires (TTL %d s)" % ttl)


def extras(png, pdf):
    import base64
    data = base64.b64encode(open(png, "rb").read()).decode()
    r = app.send_task(TASK, args=[{"b64": data}, "eng"], kwargs={"formats": ["txt", "hocr"]})
    res = r.get(timeout=90)
    expect("quick brown fox" in res.get("text", ""), "inline bytes: the page text came back")
    rend = res.get("renderings", {})
    expect("quick brown fox" in rend.get("txt", "") and "ocr_page" in rend.get("hocr", ""),
           "formats: txt and hOCR renderings in the result")
    r = app.send_task(TASK, args=[pdf], kwargs={"page": 2, "lang": "san"})
    res = r.get(timeout=120)
    deva = sum(1 for ch in res.get("text", "") if "\u0900" <= ch <= "\u097f")
    expect(res.get("page") == 2 and deva > 20 and "quick" not in res.get("text", ""),
           "page=2 of a PDF in Sanskrit: the second page (%d Devanagari letters)" % deva)
    t0 = time.time()
    r = app.send_task(TASK, args=[png, "eng"], countdown=2)
    r.get(timeout=90)
    expect(time.time() - t0 >= 1.9, "eta: ran after its countdown (%.1f s)" % (time.time() - t0))
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=10)
    r = app.send_task(TASK, args=[png, "eng"], expires=past)
    try:
        r.get(timeout=30)
        expect(False, "expires in the past: revoked")
    except Exception as e:
        expect(r.state == "REVOKED" and type(e).__name__ == "TaskRevokedError",
               "expires in the past: REVOKED (%s %s)" % (r.state, type(e).__name__))
    for args, kwargs, exc in (([png, "eng", 3], {}, "TypeError"),
                              ([png], {"colour": 1}, "TypeError"),
                              ([png], {"page": "two"}, "TypeError"),
                              ([png + ".missing"], {}, "OCRError")):
        r = app.send_task(TASK, args=args, kwargs=kwargs)
        try:
            r.get(timeout=60)
            expect(False, "bad arguments %r %r fail" % (args[1:], kwargs))
        except Exception as e:
            expect(r.state == "FAILURE" and type(e).__name__ == exc,
                   "bad arguments %r %r: FAILURE %s (%s: %s)"
                   % (args[1:], kwargs, exc, type(e).__name__, e))
    r = app.send_task("ocrpool.no_such_task", args=[png])
    try:
        r.get(timeout=60)
        expect(False, "an unknown task name fails")
    except Exception as e:
        expect(type(e).__name__ == "NotRegistered",
               "an unknown task name: NotRegistered (%s)" % type(e).__name__)


def group_of(n, paths):
    sigs = [app.signature(TASK, args=[paths[i % len(paths)], "eng"]) for i in range(n)]
    gr = group(sigs).apply_async()
    seen = []
    deadline = time.time() + 120
    while time.time() < deadline:
        c = gr.completed_count()
        if not seen or seen[-1] != c:
            seen.append(c)
        if c == n:
            break
        time.sleep(0.1)
    print("# completed_count went", seen)
    expect(seen and seen[-1] == n, "GroupResult reaches %d completed" % n)
    expect(len(seen) > 2, "progress was seen in steps, not all at once")
    expect(gr.successful(), "every member SUCCESS")
    texts = gr.get(timeout=30)
    expect(all("quick brown fox" in t["text"] for t in texts), "every member has its text")
    metas = [json.loads(redis.Redis.from_url(URL).get("celery-task-meta-" + r.id))
             for r in gr.results]
    expect(all(m.get("group_id") == gr.id for m in metas), "every meta names its group_id")


def send(ids_file, paths):
    with open(ids_file, "w") as f:
        for p in paths:
            f.write(app.send_task(TASK, args=[p, "eng"]).id + "\n")


def wait(ids_file, seconds):
    ids = open(ids_file).read().split()
    deadline = time.time() + float(seconds)
    states = {}
    while time.time() < deadline:
        try:
            r = redis.Redis.from_url(URL, socket_timeout=2)
            for i in ids:
                raw = r.get("celery-task-meta-" + i)
                states[i] = json.loads(raw)["status"] if raw else "PENDING"
        except redis.exceptions.ConnectionError:
            pass
        if len(states) == len(ids) and all(s == "SUCCESS" for s in states.values()):
            break
        time.sleep(0.2)
    counts = {}
    for s in states.values():
        counts[s] = counts.get(s, 0) + 1
    print("# states:", counts)
    expect(len(ids) > 0 and counts.get("SUCCESS") == len(ids), "all %d pages SUCCESS" % len(ids))


def watch(ids_file, out, seconds):
    """Subscribes before the pages run; counts SUCCESS publications per id."""
    ids = open(ids_file).read().split()
    r = redis.Redis.from_url(URL)
    ps = r.pubsub()
    ps.psubscribe("celery-task-meta-*")
    got = {}
    with open(out, "w") as f:
        f.write("subscribed\n")
    deadline = time.time() + float(seconds)
    while time.time() < deadline and len(got) < len(ids):
        m = ps.get_message(timeout=0.5)
        if m and m["type"] == "pmessage":
            meta = json.loads(m["data"])
            if meta["status"] == "SUCCESS":
                got[meta["task_id"]] = got.get(meta["task_id"], 0) + 1
    time.sleep(1.0)  # a late duplicate would show here
    while True:
        m = ps.get_message(timeout=0.2)
        if not m:
            break
        if m["type"] == "pmessage":
            meta = json.loads(m["data"])
            if meta["status"] == "SUCCESS":
                got[meta["task_id"]] = got.get(meta["task_id"], 0) + 1
    print("# SUCCESS publications:", sorted(got.values()))
    expect(all(got.get(i) == 1 for i in ids),
           "each of %d results stored and published once (%d ids seen)" % (len(ids), len(got)))


def started(tid, seconds):
    r = app.AsyncResult(tid)
    seen = set()
    deadline = time.time() + float(seconds)
    while time.time() < deadline:
        state = r.state  # each read asks Redis: read once, or SUCCESS can end the loop unseen
        seen.add(state)
        if state == "SUCCESS":
            break
        time.sleep(0.05)
    expect("STARTED" in seen and "SUCCESS" in seen, "states seen: %s" % sorted(seen))


def main():
    cmd, rest = sys.argv[2], sys.argv[3:]
    if cmd == "one":
        one(*rest[:2])
    elif cmd == "extras":
        extras(rest[0], rest[1])
    elif cmd == "group":
        group_of(int(rest[0]), rest[1:])
    elif cmd == "send":
        send(rest[0], rest[1:])
    elif cmd == "wait":
        wait(rest[0], rest[1])
    elif cmd == "watch":
        watch(rest[0], rest[1], rest[2])
    elif cmd == "started":
        started(rest[0], rest[1])
    elif cmd == "result":
        r = app.AsyncResult(rest[0])
        print(json.dumps({"state": r.state, "result": r.get(timeout=60)}))
    else:
        sys.exit("unknown command " + cmd)
    sys.exit(1 if failed else 0)


main()
