"""Celery's own tools against an ocrpool node (test_celery_tools.sh), with
whichever Celery the interpreter running it has (Debian's 5.2, or the
current one in the test's virtualenv).

As an app module (`celery -A celery_tools worker`): a Python worker with a
chord body, a chain's second step and a task of ocrpool's name, so it can
share the queue "celery" with an ocrpool node.

As a script:
    celery_tools.py canvas NODE PNG       send_task, group, chain and chord
                                          (Python body), AsyncResult.get
    celery_tools.py revoke NODE PNG SLOW  revoke before a page starts, and
                                          with terminate while it runs
    celery_tools.py inspect NODE          each `celery inspect` command,
                                          the reply asserted
    celery_tools.py control NODE          each `celery control` command
    celery_tools.py mixed NODE PYNODE PNG `inspect ping` answers both
                                          nodes; pages on the shared queue
    celery_tools.py events NODE PNG SLOW  worker and task events seen by
                                          an event receiver (a worker killed
                                          during SLOW: task-retried)

The broker URL is in TOOLS_BROKER. Exit status 0 when every assertion
held; each is printed with '#'.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

from celery import Celery, chain, chord, group

URL = os.environ["TOOLS_BROKER"]
app = Celery("celery_tools", broker=URL, backend=URL)
app.conf.broker_connection_retry_on_startup = True
app.conf.task_acks_late = True
app.conf.worker_prefetch_multiplier = 1
TASK = "ocrpool.ocr_page"
failed = []


@app.task(name="tools.collect")
def collect(results):
    """A chord's body, on the Python worker: what the pages said."""
    return {"n": len(results), "texts": [r.get("text", "") for r in results]}


@app.task(name="tools.words")
def words(result):
    """A chain's second step, on the Python worker."""
    return len(result.get("text", "").split())


@app.task(name="tools.note")
def note(text):
    """A chord part of the Python worker's, beside ocrpool's pages."""
    return {"text": text}


@app.task(name=TASK)
def ocr_page(source, lang, page=1, **kwargs):
    """The Python worker's answer when it takes a page from the shared queue."""
    return {"peer": "python-celery", "source": source, "text": "", "page": page}


def expect(cond, what):
    print("# " + ("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failed.append(what)


def page(path, queue="ocr", **opts):
    return app.signature(TASK, args=[path, "eng"], queue=queue, **opts)


def canvas(node, png):
    r = app.send_task(TASK, args=[png, "eng"], queue="ocr")
    res = r.get(timeout=60)
    expect("quick brown fox" in res.get("text", ""), "send_task: AsyncResult.get has the text")
    g = group(page(png) for _ in range(3)).apply_async()
    out = g.get(timeout=90)
    expect(len(out) == 3 and all("fox" in o.get("text", "") for o in out),
           "group of 3: each page's text (%d results)" % len(out))
    c = chain(page(png), app.signature("tools.words", queue="py")).apply_async()
    n = c.get(timeout=90)
    expect(isinstance(n, int) and n > 5,
           "chain: ocrpool's page then a Python task on its result (%r words)" % n)
    ch = chord([page(png) for _ in range(3)], app.signature("tools.collect", queue="py"))()
    body = ch.get(timeout=120)
    expect(body.get("n") == 3 and all("fox" in t for t in body.get("texts", [])),
           "chord: 3 pages on ocrpool, the Python body got the 3 results (%r)"
           % {k: (v if k == "n" else len(v)) for k, v in body.items()})
    # A chord whose parts run on both: its Redis keys are written by ocrpool and by this
    # Celery's Python worker, and its body runs once.
    ch = chord([page(png), app.signature("tools.note", args=["from python"], queue="py"),
                page(png)], app.signature("tools.collect", queue="py"))()
    body = ch.get(timeout=120)
    texts = body.get("texts", [])
    expect(body.get("n") == 3 and texts[1] == "from python" and "fox" in texts[0] + texts[2],
           "chord over ocrpool and a Python worker: the body got the 3 results in order")


def revoke(node, png, slow):
    rid = "revoked-before-%d" % os.getpid()
    app.control.revoke(rid)
    time.sleep(0.5)
    r = app.send_task(TASK, args=[png, "eng"], queue="ocr", task_id=rid)
    try:
        r.get(timeout=60)
        expect(False, "a revoked id does not run")
    except Exception as e:  # TaskRevokedError
        expect(type(e).__name__ == "TaskRevokedError" and r.state == "REVOKED",
               "revoke before it starts: %s, state %s" % (type(e).__name__, r.state))
    r2 = app.send_task(TASK, args=[slow, "eng"], queue="ocr")
    seen = False
    for _ in range(100):
        act = app.control.inspect(destination=[node], timeout=1).active() or {}
        if any(t.get("id") == r2.id for t in act.get(node, [])):
            seen = True
            break
        time.sleep(0.1)
    expect(seen, "the slow page is listed by inspect active while it runs")
    rep = app.control.revoke(r2.id, terminate=True, reply=True, destination=[node])
    expect(rep == [{node: {"ok": "terminate: %s" % r2.id}}], "revoke terminate replies %r" % rep)
    try:
        r2.get(timeout=30)
        expect(False, "a terminated page does not finish")
    except Exception as e:
        expect(r2.state == "REVOKED", "revoke terminate: the page ends %s (%s)"
               % (r2.state, type(e).__name__))
    rv = app.control.inspect(destination=[node], timeout=1).revoked() or {}
    expect(rid in rv.get(node, []) and r2.id in rv.get(node, []),
           "inspect revoked lists both ids")


def cli(*args):
    """`celery -A celery_tools ARGS --json`, with this interpreter: the reply, parsed."""
    cmd = [sys.executable, "-m", "celery", "-A", "celery_tools"] + list(args) + ["--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    out = p.stdout.strip().splitlines()
    try:
        return json.loads(out[0]) if out else None
    except ValueError:
        print("# celery %s said: %s %s" % (" ".join(args), p.stdout[:300], p.stderr[-300:]))
        return None


def inspect(node):
    d = ["-d", node, "-t", "5"]
    r = cli("inspect", "ping", *d)
    expect(r == {node: {"ok": "pong"}}, "celery inspect ping: %r" % r)
    for what in ("active", "reserved", "scheduled", "revoked"):
        r = cli("inspect", what, *d)
        expect(isinstance(r, dict) and isinstance(r.get(node), list),
               "celery inspect %s: a list (%r)" % (what, r))
    later = app.send_task(TASK, args=["/later.png", "eng"], queue="ocr", countdown=120)
    sch = []
    for _ in range(50):
        sch = (app.control.inspect(destination=[node], timeout=1).scheduled() or {}).get(node, [])
        if any(x.get("request", {}).get("id") == later.id for x in sch):
            break
        time.sleep(0.2)
    r = cli("inspect", "scheduled", *d) or {}
    mine = [x for x in r.get(node, []) if x.get("request", {}).get("id") == later.id]
    expect(mine and mine[0].get("eta") and mine[0]["request"].get("args") == ["/later.png", "eng"],
           "celery inspect scheduled: the page with a countdown, its eta and args (%s)"
           % (mine[0].get("eta") if mine else None))
    app.control.revoke(later.id)
    r = cli("inspect", "registered", *d)
    expect(r == {node: [TASK]}, "celery inspect registered: %r" % r)
    r = cli("inspect", "stats", *d) or {}
    st = r.get(node, {})
    pool = st.get("pool", {})
    # A worker on its way out (the one revoke-terminate killed just before: a zombie until its
    # zygote reaps it) has no memory to read (-1 or null, as monitor shows it): the others must.
    mem = [(w.get("memory") or {}).get("rss_kb", 0)
           for w in st.get("ocrpool", {}).get("workers", []) if w.get("state") != "exiting"]
    expect(pool.get("max-concurrency", 0) >= 1 and len(pool.get("processes", [])) >= 1
           and st.get("prefetch_count", 0) >= 1 and mem and all(m > 0 for m in mem),
           "celery inspect stats: concurrency %s, processes %s, prefetch %s, workers' RSS %s KiB"
           % (pool.get("max-concurrency"), pool.get("processes"), st.get("prefetch_count"), mem))
    r = cli("inspect", "active_queues", *d) or {}
    names = sorted(q.get("name") for q in r.get(node, []))
    expect(names == ["celery", "ocr"], "celery inspect active_queues: %s" % names)
    r = cli("inspect", "conf", *d) or {}
    expect(r.get(node, {}).get("worker_prefetch_multiplier") == 1,
           "celery inspect conf: Celery's setting names (%s ...)" % sorted(r.get(node, {}))[:3])
    r = cli("inspect", "report", *d) or {}
    expect("ocrpool" in r.get(node, {}).get("ok", ""), "celery inspect report names ocrpool")


def control(node):
    d = ["-d", node, "-t", "5"]

    def conc():
        st = app.control.inspect(destination=[node], timeout=1).stats() or {}
        return st.get(node, {}).get("pool", {}).get("max-concurrency")

    # Room to grow, and 10 s before the autoscaler touches the pool again.
    r = cli("control", "autoscale", "4", "1", *d)
    before = conc()
    grow = cli("control", "pool_grow", "1", *d)
    expect(grow == [{node: {"ok": "pool will grow"}}], "celery control pool_grow: %r" % grow)
    after = conc()
    expect(before and after == before + 1, "pool_grow: %s -> %s workers" % (before, after))
    r = cli("control", "pool_shrink", "1", *d)
    expect(r == [{node: {"ok": "pool will shrink"}}], "celery control pool_shrink: %r" % r)
    r = cli("control", "autoscale", "3", "1", *d)
    expect(r == [{node: {"ok": "autoscale now max=3 min=1"}}], "celery control autoscale: %r" % r)
    r = cli("control", "add_consumer", "extra", *d)
    expect(r == [{node: {"ok": "add consumer extra"}}], "celery control add_consumer: %r" % r)
    q = app.control.inspect(destination=[node], timeout=1).active_queues() or {}
    expect("extra" in [x["name"] for x in q.get(node, [])], "the added queue is consumed")
    r = cli("control", "cancel_consumer", "extra", *d)
    expect(r == [{node: {"ok": "no longer consuming from extra"}}],
           "celery control cancel_consumer: %r" % r)
    r = cli("control", "disable_events", *d)
    expect(r == [{node: {"ok": "task events disabled"}}], "celery control disable_events: %r" % r)
    r = cli("control", "enable_events", *d)
    expect(r == [{node: {"ok": "task events enabled"}}], "celery control enable_events: %r" % r)
    r = cli("control", "heartbeat", *d)
    expect(r == [{node: None}], "celery control heartbeat: %r" % r)
    r = cli("control", "revoke", "some-id-%d" % os.getpid(), *d)
    expect(r == [{node: {"ok": "tasks some-id-%d flagged as revoked" % os.getpid()}}],
           "celery control revoke: %r" % r)
    r = app.control.broadcast("no_such_command", reply=True, destination=[node], timeout=2)
    expect(r and "error" in r[0].get(node, {}), "an unknown command: an error reply (%r)" % r)


def mixed(node, pynode, png):
    r = cli("inspect", "ping", "-t", "3") or {}
    expect(r.get(node) == {"ok": "pong"} and r.get(pynode) == {"ok": "pong"},
           "celery inspect ping answers both nodes: %s" % sorted(r))
    rs = [app.send_task(TASK, args=[png, "eng"], queue="celery") for _ in range(4)]
    out = [x.get(timeout=90) for x in rs]
    by = sorted(set("python" if o.get("peer") else "ocrpool" for o in out))
    expect(len(out) == 4, "4 pages on the shared queue 'celery' all done (by %s)" % by)


def events(node, png, slow):
    seen = []

    def listen():
        with app.connection() as conn:
            recv = app.events.Receiver(conn, handlers={"*": seen.append})
            try:
                recv.capture(limit=None, timeout=40, wakeup=False)
            except Exception:
                pass

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    time.sleep(1.0)
    r = app.send_task(TASK, args=[png, "eng"], queue="ocr")
    r.get(timeout=60)
    bad = app.send_task(TASK, args=["/nonexistent/page.png", "eng"], queue="ocr")
    try:
        bad.get(timeout=60)
    except Exception:
        pass
    # A worker killed during a page: the page goes back (task-retried) and is done again.
    lost = app.send_task(TASK, args=[slow, "eng"], queue="ocr")
    pid = None
    for _ in range(100):
        act = (app.control.inspect(destination=[node], timeout=1).active() or {}).get(node, [])
        pid = next((t.get("worker_pid") for t in act if t.get("id") == lost.id), None)
        if pid:
            break
        time.sleep(0.1)
    if pid:
        os.kill(pid, signal.SIGKILL)
    res = lost.get(timeout=60)
    expect(pid and "fox" in res.get("text", ""),
           "a page whose worker (%s) was killed is done again" % pid)
    time.sleep(3)
    mine = [e for e in seen if e.get("hostname") == node]
    types = set(e["type"] for e in mine)
    expect("worker-heartbeat" in types, "worker-heartbeat events from %s" % node)
    want = {"task-received", "task-started", "task-succeeded", "task-failed"}
    expect(want <= types, "task events: %s" % sorted(t for t in types if t.startswith("task")))
    ok = [e for e in mine if e["type"] == "task-succeeded" and e.get("uuid") == r.id]
    expect(ok and ok[0].get("runtime", -1) >= 0, "task-succeeded has its runtime")
    fl = [e for e in mine if e["type"] == "task-failed" and e.get("uuid") == bad.id]
    expect(fl and fl[0].get("exception"), "task-failed has its reason: %s"
           % (fl[0].get("exception", "")[:80] if fl else None))
    rt = [e for e in mine if e["type"] == "task-retried" and e.get("uuid") == lost.id]
    expect(rt and "killed" in rt[0].get("exception", ""),
           "task-retried for it: %s" % (rt[0].get("exception", "")[:90] if rt else None))
    hb = [e for e in mine if e["type"] == "worker-heartbeat"]
    expect(hb and all(k in hb[-1] for k in ("active", "processed", "loadavg", "freq",
                                            "clock", "pid", "utcoffset", "timestamp")),
           "heartbeats carry Celery's fields")


if __name__ == "__main__":
    cmd, node = sys.argv[1], sys.argv[2]
    {"canvas": lambda: canvas(node, sys.argv[3]),
     "revoke": lambda: revoke(node, sys.argv[3], sys.argv[4]),
     "inspect": lambda: inspect(node),
     "control": lambda: control(node),
     "mixed": lambda: mixed(node, sys.argv[3], sys.argv[4]),
     "events": lambda: events(node, sys.argv[3], sys.argv[4])}[cmd]()
    sys.exit(1 if failed else 0)
