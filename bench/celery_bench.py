"""celery_bench.py URL N LANG PAGES...: the same N pages, the same Redis,
through (a) ocrpool worker -c 2 and (b) the reference Python Celery worker
(bench/celery_ref.py, prefork -c 2, prefetch 1, acks late, max tasks per
child 50, max memory per child 200000). Each: pages/s from the first send
to the last result, total RSS and PSS of the worker's process tree sampled
every 0.1 s (peak and mean), and idle RSS/PSS per worker process once ready
and after the run. Prints a table with ratios."""
import os
import signal
import subprocess
import sys
import threading
import time

from celery import Celery

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memsample import field, tree  # noqa: E402

URL, N, LANG, PAGES = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
OCRPOOL = os.environ["OCRPOOL"]
WORK = os.environ.get("WORK", "/tmp")


def pss_kb(pid):
    return field("/proc/%d/smaps_rollup" % pid, "Pss")


def rss_kb(pid):
    return field("/proc/%d/status" % pid, "VmRSS")


class Sampler(threading.Thread):
    def __init__(self, root):
        super().__init__(daemon=True)
        self.root, self.stop, self.rows = root, False, []

    def run(self):
        while not self.stop:
            ps = tree(self.root)
            self.rows.append((sum(rss_kb(p) for p in ps), sum(pss_kb(p) for p in ps)))
            time.sleep(0.1)


def idle(root, skip):
    """Mean RSS and PSS (MB) of the page-running processes, and the whole tree's PSS."""
    ps = [p for p in tree(root) if p not in skip]
    rss = [rss_kb(p) for p in ps]
    pss = [pss_kb(p) for p in ps]
    return (sum(rss) / len(rss) / 1024 if rss else 0, sum(pss) / len(pss) / 1024 if pss else 0,
            sum(pss_kb(p) for p in tree(root)) / 1024)


def run(name, argv, env, ready, skip_fn):
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(WORK, name + ".log"), "w"))
    t0 = time.time()
    while not ready() and time.time() - t0 < 120:
        time.sleep(0.1)
    time.sleep(2)  # settle: workers forked and models loaded
    skip = skip_fn(proc.pid)
    idle_before = idle(proc.pid, skip)
    app = Celery("bench", broker=URL, backend=URL)
    s = Sampler(proc.pid)
    s.start()
    t1 = time.time()
    results = [app.send_task("ocrpool.ocr_page", args=[PAGES[i % len(PAGES)], LANG])
               for i in range(N)]
    texts = [r.get(timeout=600) for r in results]
    wall = time.time() - t1
    s.stop = True
    s.join()
    time.sleep(1)
    idle_after = idle(proc.pid, skip_fn(proc.pid))
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    chars = sum(len(t["text"]) for t in texts)
    rows = s.rows or [(0, 0)]
    return {"name": name, "pps": N / wall, "wall": wall, "chars": chars,
            "rss_peak": max(r[0] for r in rows) / 1024, "pss_peak": max(r[1] for r in rows) / 1024,
            "pss_mean": sum(r[1] for r in rows) / len(rows) / 1024,
            "idle_rss": idle_before[0], "idle_pss": idle_before[1], "idle_tree_pss": idle_before[2],
            "after_rss": idle_after[0], "after_pss": idle_after[1]}


def main():
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    here = os.path.dirname(os.path.abspath(__file__))
    res = []
    # ocrpool: master, zygote (the model, shared), 2 workers.
    ocr_env = dict(env, OCRPOOL_LOG_LEVEL="info")
    # A worker on Redis reads only files under --allow-root: the pages' folders.
    roots = sorted({os.path.dirname(os.path.abspath(p)) for p in PAGES})
    argv = [OCRPOOL, "worker", "--broker", URL, "-c", "2", "-l", LANG, "--max-image-size", "2048",
            "--allow-root", ":".join(roots),
            "--engine", os.environ.get("BENCH_ENGINE", "tesseract")]

    def ocr_ready():
        try:
            return open(os.path.join(WORK, "ocrpool.log")).read().count("ready: RSS") >= 2
        except OSError:
            return False

    def ocr_skip(root):
        kids = [p for p in tree(root) if p != root]
        # the zygote is the master's first child; workers are the zygote's children
        zyg = [p for p in kids if any(q in kids for q in tree(p) if q != p)]
        return {root, *zyg}

    res.append(run("ocrpool", argv, ocr_env, ocr_ready, ocr_skip))
    # The reference: a Python Celery prefork worker with tesserocr.
    ready_file = os.path.join(WORK, "celery.ready")
    if os.path.exists(ready_file):
        os.unlink(ready_file)
    py_env = dict(env, BENCH_BROKER=URL, BENCH_READY=ready_file, BENCH_LANG=LANG,
                  PYTHONPATH=here)
    argv = ["/usr/bin/python3", "-m", "celery", "-A", "celery_ref", "worker", "-c", "2",
            "-P", "prefork", "--prefetch-multiplier", "1", "--max-tasks-per-child", "50",
            "--max-memory-per-child", "200000", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-l", "warning"]
    res.append(run("celery", argv, py_env, lambda: os.path.exists(ready_file),
                   lambda root: {root}))
    o, c = res
    print("# %d pages (%s), -c 2, same Redis; RSS/PSS: the worker's whole process tree, "
          "sampled every 0.1 s" % (N, LANG))
    print("%-34s %8s %10s %10s %10s %12s %12s %12s" % (
        "worker", "pages/s", "peak RSS", "peak PSS", "mean PSS", "idle RSS/w", "idle PSS/w",
        "after RSS/w"))
    for r in res:
        print("%-34s %8.3f %8.0f MB %8.0f MB %8.0f MB %9.1f MB %9.1f MB %9.1f MB" % (
            ("ocrpool worker --engine " + os.environ.get("BENCH_ENGINE", "tesseract"))
            if r["name"] == "ocrpool" else "Python Celery + tesserocr",
            r["pps"], r["rss_peak"], r["pss_peak"], r["pss_mean"], r["idle_rss"], r["idle_pss"],
            r["after_rss"]))
    print("idle, whole tree PSS: ocrpool %.0f MB, celery %.0f MB" % (o["idle_tree_pss"],
                                                                  c["idle_tree_pss"]))
    print("ratios ocrpool/celery: speed x%.2f, peak PSS %.2f, mean PSS %.2f, idle PSS/worker %.2f, "
          "idle tree PSS %.2f"
          % (o["pps"] / c["pps"], o["pss_peak"] / c["pss_peak"], o["pss_mean"] / c["pss_mean"],
             o["idle_pss"] / c["idle_pss"] if c["idle_pss"] else 0,
             o["idle_tree_pss"] / c["idle_tree_pss"] if c["idle_tree_pss"] else 0))
    print("# characters read: ocrpool %d, celery %d" % (o["chars"], c["chars"]))


main()
