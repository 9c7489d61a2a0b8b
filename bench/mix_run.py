#!/usr/bin/python3
"""mix_run.py DIR: issue 18's comparison on the page mix bench/mix_pages.py made in DIR
(pages.tsv), in one run, each page read in its own languages, in the same order:

  (a) the tesseract CLI, one call per page, `xargs -P2`, OMP_THREAD_LIMIT=1, full size;
  (b) the reference Python Celery worker (bench/celery_ref.py with bench/celery_bench.py's
      settings: prefork -c 2, prefetch 1, acks late, max tasks per child 50, max memory
      per child 200000 KiB, tesserocr, pages shrunk to 2048 px), on its own redis-server;
  (c) `ocrpool worker -c 2` (its defaults: the lstm engine, 2048 px), on its own
      redis-server of the same binary and settings.

(b) and (c) are fed by the same plain Celery client (send_task, then get), timed from the
first send to the last result, the workers started and ready before. Memory: the total
PSS (and RSS) of the system's whole process tree, its redis-server included for (b) and
(c) (the client excluded), sampled every 0.1 s (bench/memsample.py's tree and fields).
Accuracy: 1 - CER over all pages (the sum of the pages' Levenshtein distances over the sum
of their truths' lengths, after tools/cer.py's normalisation), per language and per kind.
Prints the table, the ratios of ocrpool to each peer and the issue's goals, met or not;
per-page figures go to DIR/results.tsv, each system's texts to DIR/out/SYSTEM/."""
import gc
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
from cer import norm  # noqa: E402
from memsample import field, tree  # noqa: E402

DIR = os.path.abspath(sys.argv[1])
PAGES_DIR = os.path.join(DIR, "pages")
OCRPOOL = os.environ["OCRPOOL"]
ENV = dict(os.environ, OMP_THREAD_LIMIT="1")


def levenshtein(a, b):
    """Levenshtein distance over code points (Hyyrö's bit-vector form of Myers' algorithm,
    on Python's big integers: tools/cer.py's result, fast on pages of thousands of
    characters)."""
    if not a:
        return len(b)
    if not b:
        return len(a)
    m = len(a)
    peq = {}
    for i, c in enumerate(a):
        peq[c] = peq.get(c, 0) | (1 << i)
    mask, top = (1 << m) - 1, 1 << (m - 1)
    pv, mv, score = mask, 0, m
    for c in b:
        eq = peq.get(c, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | ~(xh | pv)
        mh = pv & xh
        if ph & top:
            score += 1
        elif mh & top:
            score -= 1
        ph = (ph << 1) | 1
        mh <<= 1
        pv = (mh | ~(xv | ph)) & mask
        mv = ph & xv & mask
    return score


def load_pages():
    pages = []
    with open(os.path.join(DIR, "pages.tsv"), encoding="utf-8") as f:
        for line in f:
            name, lang, kind, w, h = line.rstrip("\n").split("\t")
            base = os.path.splitext(name)[0]
            with open(os.path.join(PAGES_DIR, base + ".gt.txt"), encoding="utf-8") as g:
                truth = norm(g.read())
            pages.append({"name": name, "base": base, "path": os.path.join(PAGES_DIR, name),
                          "lang": lang, "kind": kind, "mp": int(w) * int(h) / 1e6,
                          "truth": truth})
    # One order for every system, seeded: sizes and languages mixed as a library's queue.
    random.Random(38).shuffle(pages)
    return pages


class Sampler(threading.Thread):
    """Total RSS and PSS (KiB) of the trees under ROOTS, every 0.1 s, until stopped."""

    def __init__(self, roots):
        super().__init__(daemon=True)
        self.roots, self.stop, self.peak_rss, self.peak_pss = roots, False, 0, 0

    def run(self):
        while not self.stop:
            ps = [p for r in self.roots for p in tree(r)]
            self.peak_rss = max(self.peak_rss, sum(field("/proc/%d/status" % p, "VmRSS")
                                                   for p in ps))
            self.peak_pss = max(self.peak_pss, sum(field("/proc/%d/smaps_rollup" % p, "Pss")
                                                   for p in ps))
            time.sleep(0.1)


def run_cli(pages, out):
    """(a): xargs -P2 over `tesseract PAGE OUT -l LANG`, under bench/memsample.py."""
    os.makedirs(out, exist_ok=True)
    jobs = "".join("%s\n%s\n%s\n" % (p["path"], p["lang"], os.path.join(out, p["base"]))
                   for p in pages)
    cmd = ("xargs -d '\\n' -n 3 -P 2 sh -c 'tesseract \"$1\" \"$3\" -l \"$2\" 2>/dev/null' _"
           " <%s" % os.path.join(out, "jobs"))
    with open(os.path.join(out, "jobs"), "w") as f:
        f.write(jobs)
    r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "memsample.py"), "--", "bash",
                        "-c", cmd], env=ENV, stdout=subprocess.PIPE, text=True, check=True)
    wall, peak_rss, peak_pss, _, rc = r.stdout.split()
    texts, failed = [], 0
    for p in pages:
        try:
            with open(os.path.join(out, p["base"] + ".txt"), encoding="utf-8") as f:
                texts.append(f.read())
        except OSError:
            texts.append("")
            failed += 1
    if int(rc) != 0:
        print("tesseract CLI: xargs exited %s (a page failed)" % rc, file=sys.stderr)
    return {"wall": float(wall), "rss": float(peak_rss), "pss": float(peak_pss),
            "texts": texts, "failed": failed}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_redis(name):
    port = free_port()
    d = os.path.join(DIR, "redis-" + name)
    os.makedirs(d, exist_ok=True)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", d, "--save", "", "--appendonly", "no",
                             "--daemonize", "no"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, "redis://127.0.0.1:%d/0" % port


def run_worker(name, argv, env, ready, pages, out):
    """(b) or (c): a fresh redis-server, the worker on it, the pages sent by one client."""
    from celery import Celery  # Debian's python3-celery, as bench/celery_bench.py
    os.makedirs(out, exist_ok=True)
    redis, url = start_redis(name)
    log = open(os.path.join(DIR, name + ".log"), "w")
    proc = subprocess.Popen(argv(url), env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        t0 = time.time()
        while not ready() and time.time() - t0 < 180:
            if proc.poll() is not None:
                raise RuntimeError("%s exited (%d): see %s.log" % (name, proc.returncode, name))
            time.sleep(0.1)
        time.sleep(2)  # settle: workers forked and models loaded, as bench/celery_bench.py
        app = Celery("mix", broker=url, backend=url)
        sampler = Sampler([proc.pid, redis.pid])
        sampler.start()
        t1 = time.time()
        results = [app.send_task("ocrpool.ocr_page", args=[p["path"], p["lang"]])
                   for p in pages]
        texts, turns, failed = [], [], 0
        for p, r in zip(pages, results):
            try:
                res = r.get(timeout=1800)
                texts.append(res["text"])
                if res.get("rotation"):  # ocrpool's --rotate-pages: every page here is upright
                    turns.append("%s %s" % (p["name"], res["rotation"]))
            except Exception as e:  # a failed page counts with no text
                print("%s: %s failed: %s: %s" % (name, p["name"], type(e).__name__, e),
                      file=sys.stderr)
                texts.append("")
                failed += 1
        wall = time.time() - t1
        sampler.stop = True
        sampler.join()
        del results, r  # their pending-result hooks need Redis: run them while it is up
        gc.collect()
        for p, t in zip(pages, texts):
            with open(os.path.join(out, p["base"] + ".txt"), "w", encoding="utf-8") as f:
                f.write(t)
        return {"wall": wall, "rss": sampler.peak_rss / 1024, "pss": sampler.peak_pss / 1024,
                "texts": texts, "failed": failed, "turns": turns}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        redis.terminate()
        redis.wait()
        log.close()


def celery_system(pages):
    ready_file = os.path.join(DIR, "celery.ready")
    if os.path.exists(ready_file):
        os.unlink(ready_file)
    langs = [p["lang"] for p in pages]
    env = dict(ENV, BENCH_READY=ready_file, PYTHONPATH=HERE,
               BENCH_LANG=max(set(langs), key=langs.count))

    def argv(url):
        env["BENCH_BROKER"] = url
        return ["/usr/bin/python3", "-m", "celery", "-A", "celery_ref", "worker", "-c", "2",
                "-P", "prefork", "--prefetch-multiplier", "1", "--max-tasks-per-child", "50",
                "--max-memory-per-child", "200000", "--without-gossip", "--without-mingle",
                "--without-heartbeat", "-l", "warning"]

    return run_worker("celery", argv, env, lambda: os.path.exists(ready_file), pages,
                      os.path.join(DIR, "out", "celery"))


def ocrpool_system(pages):
    env = dict(ENV, OCRPOOL_LOG_LEVEL="info")
    log = os.path.join(DIR, "ocrpool.log")

    def argv(url):
        return [OCRPOOL, "worker", "--broker", url, "-c", "2", "--allow-root", PAGES_DIR]

    def ready():
        try:
            with open(log) as f:
                return f.read().count("ready: RSS") >= 2
        except OSError:
            return False

    return run_worker("ocrpool", argv, env, ready, pages, os.path.join(DIR, "out", "ocrpool"))


def accuracy(pages, texts, pick):
    d = n = 0
    for p, t in zip(pages, texts):
        if pick(p):
            d += levenshtein(p["truth"], norm(t))
            n += len(p["truth"])
    return 1 - d / n if n else float("nan")


def main():
    pages = load_pages()
    systems = []
    for label, fn in (
            ("tesseract CLI, xargs -P2, OMP_THREAD_LIMIT=1",
             lambda: run_cli(pages, os.path.join(DIR, "out", "cli"))),
            ("Python Celery + tesserocr, -c 2 (+ Redis)", lambda: celery_system(pages)),
            ("ocrpool worker -c 2, lstm (+ Redis)", lambda: ocrpool_system(pages))):
        print("mix: running %s ..." % label, file=sys.stderr)
        r = fn()
        r["label"] = label
        r["pps"] = len(pages) / r["wall"]
        r["acc"] = accuracy(pages, r["texts"], lambda p: True)
        systems.append(r)
    cli, cel, ocp = systems

    groups = []
    for lang in sorted({p["lang"] for p in pages}, key=lambda x: (len(x), x)):
        groups.append((lang, lambda p, lang=lang: p["lang"] == lang))
    groups += [("A4", lambda p: p["kind"] == "a4"), ("scans", lambda p: p["kind"] == "scan")]

    n_a4 = sum(p["kind"] == "a4" for p in pages)
    mps = [p["mp"] for p in pages if p["kind"] == "scan"]
    print("# issue 18's mix, one run: %d pages, %d synthetic A4 300 dpi (%s) and %d synthetic "
          "stand-ins for scans (%.1f to %.1f MP; %s), each in its own languages"
          % (len(pages), n_a4, ", ".join("%s %d" % (l, sum(p["lang"] == l and p["kind"] == "a4"
                                                           for p in pages))
                                         for l in ("san", "tam", "eng")),
             len(mps), min(mps), max(mps),
             ", ".join("%s %d" % (l, sum(p["lang"] == l and p["kind"] == "scan" for p in pages))
                       for l in sorted({p["lang"] for p in pages if p["kind"] == "scan"}))))
    print("# peak total PSS/RSS: the whole process tree, sampled every 0.1 s (Redis included "
          "for the Redis systems); 1 - CER over all pages' characters")
    print()
    print("| system | pages/s | peak total PSS | peak total RSS | 1 − CER | wall | failed pages |")
    print("|---|---|---|---|---|---|---|")
    for r in systems:
        print("| %s | %.2f | %.0f MB | %.0f MB | %.1f %% | %.0f s | %d |" % (
            r["label"], r["pps"], r["pss"], r["rss"], 100 * r["acc"], r["wall"], r["failed"]))
    print()
    print("1 − CER per group:")
    print("| group | pages | " + " | ".join(("tesseract CLI", "Celery", "ocrpool")) + " |")
    print("|---|---|---|---|---|")
    for g, pick in groups:
        print("| %s | %d | %s |" % (g, sum(pick(p) for p in pages), " | ".join(
            "%.1f %%" % (100 * accuracy(pages, r["texts"], pick)) for r in systems)))
    print()
    print("ratios, ocrpool to each peer:")
    for peer in (cli, cel):
        print("  vs %-46s speed x%.2f, peak PSS x%.2f, 1 − CER %+.1f points" % (
            peer["label"], ocp["pps"] / peer["pps"], ocp["pss"] / peer["pss"],
            100 * (ocp["acc"] - peer["acc"])))
    goals = [("speed >= 3x the tesseract CLI", ocp["pps"] >= 3 * cli["pps"],
              "x%.2f" % (ocp["pps"] / cli["pps"])),
             ("speed >= 3x the Celery worker", ocp["pps"] >= 3 * cel["pps"],
              "x%.2f" % (ocp["pps"] / cel["pps"])),
             ("peak total PSS <= 1/4 of the Celery worker's", ocp["pss"] <= cel["pss"] / 4,
              "%.2f" % (ocp["pss"] / cel["pss"])),
             ("1 − CER not below the CLI's", ocp["acc"] >= cli["acc"],
              "%.1f vs %.1f %%" % (100 * ocp["acc"], 100 * cli["acc"])),
             ("1 − CER not below the Celery worker's", ocp["acc"] >= cel["acc"],
              "%.1f vs %.1f %%" % (100 * ocp["acc"], 100 * cel["acc"])),
             ("no page failed", ocp["failed"] == 0, "%d failed" % ocp["failed"])]
    if ocp.get("turns"):
        print("ocrpool turned %d upright page(s) (--rotate-pages): %s"
              % (len(ocp["turns"]), ", ".join(ocp["turns"])))
    print("goals (issue 18):")
    for what, ok, fig in goals:
        print("  %-46s %-8s %s" % (what, "met" if ok else "NOT met", fig))
    with open(os.path.join(DIR, "results.tsv"), "w", encoding="utf-8") as f:
        f.write("page\tlang\tkind\tMP\tchars\tcli_1-CER\tcelery_1-CER\tocrpool_1-CER\n")
        for i, p in enumerate(pages):
            f.write("%s\t%s\t%s\t%.2f\t%d\t%s\n" % (
                p["name"], p["lang"], p["kind"], p["mp"], len(p["truth"]), "\t".join(
                    "%.3f" % (1 - levenshtein(p["truth"], norm(r["texts"][i]))
                              / max(1, len(p["truth"]))) for r in systems)))
    print("# per page: %s" % os.path.relpath(os.path.join(DIR, "results.tsv"), ROOT))


if __name__ == "__main__":
    main()
