"""The Python side of tests/chaos.sh: sends the pages, watches their results
while nodes are killed under them, and judges the end.

    chaos_check.py send URL IDS NULL REAL BLANK PNG
        Celery producer (as a Python app): NULL tasks on BLANK to the queue
        "celery" and REAL tasks on PNG to the queue "real", mixed; writes
        "ID null|real" lines to IDS.
    chaos_check.py watch-redis URL IDS OUT
    chaos_check.py watch-sqlite OCRPOOL URL IDS OUT
        Until OUT.stop exists: writes the number of finished pages to
        OUT.progress, and records every store it sees. Redis: each SUCCESS
        publication on celery-task-meta-<id> (subscribed before the pages
        run, resubscribed after a Redis restart) and each meta read every
        0.5 s; SQLite: `ocrpool status --json --tasks` every second (a done
        task's worker pid and finish time). Writes OUT (JSON) at the end.
    chaos_check.py verdict-redis URL IDS OUT NULLLOG
    chaos_check.py verdict-sqlite OCRPOOL URL IDS OUT NULLLOG GROUP
        The end, read as a user would: Redis by Celery's AsyncResult, SQLite
        by `ocrpool status --json --tasks` (every page) and every page's
        stored result read back by one `ocrpool result --format json GROUP`
        (the pages were submitted in GROUP). Prints "# ..." lines, then
        "LOST L DUP D RERUN R".
    chaos_check.py selftest
        The counting on made-up observations: a page lost, a page published
        twice, a page overwritten, a page stored from no run, and a page
        re-run once must read "LOST 1 DUP 3 RERUN 1" (the test shows the
        count can say no).

What is counted:
  lost        a page without a final SUCCESS / done result at the end.
  duplicated  a page whose result was stored more than once: on Redis two
              SUCCESS publications (each store publishes), on either broker
              a finished page whose stored result changed after it was first
              seen (another run's text, worker pid or finish time), a done
              page seen again as not done, or a stored result that no run of
              that page produced.
  re-run      (reported, not a failure) a page the engine completed more
              than once: at-least-once delivery re-runs a page whose worker,
              zygote or master was killed before its result was stored.
The null engine writes one "ID PID.N" line per completion (OCRPOOL_NULL_LOG)
and returns the text "null PID.N", so each run's result is its own.
"""
import json
import os
import subprocess
import sys
import threading
import time

TASK = "ocrpool.ocr_page"


def read_ids(path):
    kinds = {}
    for line in open(path):
        if line.strip():
            i, k = line.split()
            kinds[i] = k
    return kinds


def null_runs(path):
    runs = {}
    if os.path.exists(path):
        for line in open(path):
            parts = line.split()
            if len(parts) == 2:
                runs.setdefault(parts[0], []).append(parts[1])
    return runs


def send(url, ids_path, n_null, n_real, blank, png):
    from celery import Celery
    app = Celery("chaos", broker=url, backend=url)
    n_null, n_real = int(n_null), int(n_real)
    total = n_null + n_real
    every = total // n_real if n_real else 0
    with open(ids_path, "w") as f:
        reals = 0
        for k in range(total):
            if every and k % every == every // 2 and reals < n_real:
                r = app.send_task(TASK, args=[png, "eng"], queue="real")
                f.write(r.id + " real\n")
                reals += 1
            else:
                r = app.send_task(TASK, args=[blank, "eng"], queue="celery")
                f.write(r.id + " null\n")


class Seen:
    """What the watcher saw per id: the stores (a key per distinct result) in order."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pubs = {}  # id -> SUCCESS publications
        self.first = {}  # id -> the first finished result seen (a key)
        self.changes = {}  # id -> later results that differ from the first

    def result(self, tid, key):
        with self.lock:
            if tid not in self.first:
                self.first[tid] = key
            elif key != self.first[tid] and key not in self.changes.get(tid, []):
                self.changes.setdefault(tid, []).append(key)

    def dump(self, out):
        with self.lock:
            json.dump({"pubs": self.pubs, "first": self.first, "changes": self.changes},
                      open(out, "w"))


def meta_key(meta):
    """A stored Redis meta as one key: its status and the result's text."""
    res = meta.get("result")
    text = res.get("text") if isinstance(res, dict) else json.dumps(res)
    return "%s %s" % (meta.get("status"), text)


def watch_redis(url, ids_path, out):
    import redis
    ids = list(read_ids(ids_path))
    idset = set(ids)
    seen = Seen()
    stop = out + ".stop"

    def subscriber():
        while not os.path.exists(stop):
            try:
                ps = redis.Redis.from_url(url, socket_timeout=2).pubsub()
                ps.psubscribe("celery-task-meta-*")
                while not os.path.exists(stop):
                    m = ps.get_message(timeout=0.5)
                    if m and m["type"] == "pmessage":
                        meta = json.loads(m["data"])
                        tid = meta.get("task_id")
                        if tid in idset and meta.get("status") == "SUCCESS":
                            with seen.lock:
                                seen.pubs[tid] = seen.pubs.get(tid, 0) + 1
                        if tid in idset:
                            seen.result(tid, meta_key(meta))
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                time.sleep(0.1)

    th = threading.Thread(target=subscriber, daemon=True)
    th.start()
    open(out + ".subscribed", "w").close()
    while True:
        last = os.path.exists(stop)
        try:
            r = redis.Redis.from_url(url, socket_timeout=2)
            done = 0
            for k in range(0, len(ids), 500):
                chunk = ids[k:k + 500]
                for tid, raw in zip(chunk, r.mget(["celery-task-meta-" + i for i in chunk])):
                    if raw:
                        meta = json.loads(raw)
                        if meta.get("status") in ("SUCCESS", "FAILURE", "REVOKED"):
                            seen.result(tid, meta_key(meta))
                            done += 1
            with open(out + ".progress.tmp", "w") as f:
                f.write("%d\n" % done)
            os.replace(out + ".progress.tmp", out + ".progress")
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            pass
        if last:
            break
        time.sleep(0.5)
    th.join(timeout=3)
    seen.dump(out)


def status_tasks(ocrpool, url):
    p = subprocess.run([ocrpool, "status", "--broker", url, "--json", "--tasks"],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip()[:300])
    return json.loads(p.stdout)["tasks"]


def watch_sqlite(ocrpool, url, ids_path, out):
    idset = set(read_ids(ids_path))
    seen = Seen()
    stop = out + ".stop"
    open(out + ".subscribed", "w").close()
    while True:
        last = os.path.exists(stop)
        try:
            done = 0
            for t in status_tasks(ocrpool, url):
                if t["id"] not in idset:
                    continue
                if t["state"] == "done":
                    done += 1
                    seen.result(t["id"], "done %s %s" % (t.get("worker_pid"), t.get("finished")))
                elif t["id"] in seen.first:
                    seen.result(t["id"], t["state"])  # a done page that is not done any more
            with open(out + ".progress.tmp", "w") as f:
                f.write("%d\n" % done)
            os.replace(out + ".progress.tmp", out + ".progress")
        except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired):
            pass
        if last:
            break
        time.sleep(1.0)
    seen.dump(out)


def judge(kinds, finals, obs, runs, extra_dup):
    """finals: id -> (ok, text) at the end. Prints the verdict; returns its exit status."""
    lost = sorted(i for i in kinds if not finals.get(i, (False, None))[0])
    dup = set(extra_dup)
    dup |= {i for i, n in obs["pubs"].items() if n > 1}
    dup |= set(obs["changes"])
    for i, (ok, text) in finals.items():
        if ok and kinds[i] == "null" and text and text.startswith("null "):
            if text.split(" ", 1)[1] not in runs.get(i, []):
                print("# %s: stored %r, which no run of it produced" % (i, text))
                dup.add(i)
    rerun = sorted(i for i, r in runs.items() if i in kinds and len(r) > 1)
    for i in lost[:10]:
        print("# lost: %s (%s): %s" % (i, kinds[i], finals.get(i, (False, "no result"))[1]))
    for i in sorted(dup)[:10]:
        print("# duplicated: %s: %d publications, first %r, then %r"
              % (i, obs["pubs"].get(i, 0), obs["first"].get(i), obs["changes"].get(i)))
    real_ok = sum(1 for i, k in kinds.items() if k == "real" and finals.get(i, (0, ""))[0]
                  and "quick brown fox" in (finals[i][1] or ""))
    print("# real pages read by tesseract: %d of %d" % (real_ok, list(kinds.values()).count("real")))
    print("# re-run (completed by the engine more than once, expected): %d pages, %s" %
          (len(rerun), {n: sum(1 for i in rerun if len(runs[i]) == n)
                        for n in sorted({len(runs[i]) for i in rerun})}))
    print("LOST %d DUP %d RERUN %d" % (len(lost), len(dup), len(rerun)))
    return 1 if lost or dup else 0


def verdict_redis(url, ids_path, out, null_log):
    from celery import Celery
    import redis
    app = Celery("chaos", broker=url, backend=url)
    kinds = read_ids(ids_path)
    obs = json.load(open(out))
    finals = {}
    for i in kinds:
        r = app.AsyncResult(i)
        state = r.state
        if state == "SUCCESS":
            res = r.get(timeout=10)
            finals[i] = (True, res.get("text", ""))
        else:
            finals[i] = (False, "state %s" % state)
    rc = redis.Redis.from_url(url)
    print("# unacknowledged messages left: %d, queued: %d" %
          (rc.hlen("unacked"), rc.llen("celery") + rc.llen("real")))
    return judge(kinds, finals, obs, null_runs(null_log), [])


def group_results(ocrpool, url, group):
    """Every done page's stored result in GROUP, by task id, from one `ocrpool result`
    call (a page not done is null in its array, and makes the call exit 1); and the
    call's complaint, or None."""
    p = subprocess.run([ocrpool, "result", "--broker", url, "--format", "json", group],
                       capture_output=True, text=True, timeout=300)
    try:
        pages = json.loads(p.stdout)
    except ValueError:
        return {}, "ocrpool result %s: %s" % (group, p.stderr.strip()[:200])
    return {r["id"]: r for r in pages if isinstance(r, dict) and "id" in r}, None


def verdict_sqlite(ocrpool, url, ids_path, out, null_log, group):
    kinds = read_ids(ids_path)
    obs = json.load(open(out))
    tasks = {t["id"]: t for t in status_tasks(ocrpool, url)}
    finals, dup = {}, []
    # Every page is read back (one `ocrpool result` for the whole group: one call per
    # page, at about 0.2 s each, would take minutes for 1000).
    stored, why = group_results(ocrpool, url, group)
    for i in kinds:
        t = tasks.get(i)
        if not t or t["state"] != "done":
            finals[i] = (False, "state %s %s" % (t and t["state"], t and t.get("reason")))
            continue
        if i not in stored:
            finals[i] = (False, why or "done, but ocrpool result has no result for it")
            continue
        text = stored[i].get("text", "")
        finals[i] = (True, text)
        # The stored result and the task's record must come from one run.
        if text.startswith("null ") and text.split()[1].split(".")[0] != str(t.get("worker_pid")):
            print("# %s: result of worker %s, record of worker %s"
                  % (i, text.split()[1], t.get("worker_pid")))
            dup.append(i)
    done = [i for i in kinds if tasks.get(i) and tasks[i]["state"] == "done"]
    print("# read back by ocrpool result: %d of %d done pages"
          % (sum(1 for i in done if i in stored), len(done)))
    extra = [t["id"] for t in tasks.values() if t["id"] not in kinds]
    print("# tasks in the queue that were not sent: %d" % len(extra))
    return judge(kinds, finals, obs, null_runs(null_log), dup + extra)


def selftest():
    kinds = {"a": "null", "b": "null", "c": "null", "d": "null", "e": "null", "f": "real"}
    runs = {"a": ["1.1"], "b": ["1.2"], "c": ["2.1", "3.1"], "d": ["2.2"], "e": ["4.1"],
            "f": []}
    finals = {"a": (True, "null 1.1"), "b": (True, "null 1.2"), "c": (True, "null 3.1"),
              "d": (True, "null 9.9"), "e": (False, "state PENDING"),
              "f": (True, "The quick brown fox")}
    obs = {"pubs": {"a": 1, "b": 2, "c": 1, "d": 1}, "first": {"c": "SUCCESS null 2.1"},
           "changes": {"c": ["SUCCESS null 3.1"]}}
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        judge(kinds, finals, obs, runs, [])
    last = buf.getvalue().strip().splitlines()[-1]
    print(buf.getvalue(), end="")
    return 0 if last == "LOST 1 DUP 3 RERUN 1" else 1


def main():
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "send":
        send(*a)
    elif cmd == "watch-redis":
        watch_redis(*a)
    elif cmd == "watch-sqlite":
        watch_sqlite(*a)
    elif cmd == "verdict-redis":
        sys.exit(verdict_redis(*a))
    elif cmd == "verdict-sqlite":
        sys.exit(verdict_sqlite(*a))
    elif cmd == "selftest":
        sys.exit(selftest())
    else:
        sys.exit("unknown command " + cmd)


main()
