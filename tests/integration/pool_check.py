#!/usr/bin/env python3
"""pool_check.py CHECK STATUS.json [args]: checks over `ocrpool status --json --tasks`.

  overlap N            the most pages running at once is exactly N
  max-overlap N        ... is at most N
  pids N               pages were done by exactly N distinct worker pids
  state ID STATE [DELIVERIES]   a task's state (and deliveries)
  serial A B           the pages whose source contains A never overlap each other,
                       and some page whose source contains B ran beside one of them
  order HIGH LOW       every page of group HIGH started before any of group LOW
"""
import json
import sys


def intervals(tasks, pred=lambda t: True):
    return [(t["started"], t["finished"]) for t in tasks
            if t["started"] is not None and t["finished"] is not None and pred(t)]


def max_overlap(iv):
    ev = sorted([(s, 1) for s, _ in iv] + [(f, -1) for _, f in iv], key=lambda e: (e[0], e[1]))
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def main():
    check, path = sys.argv[1], sys.argv[2]
    d = json.load(open(path))
    tasks = d["tasks"]
    a = sys.argv[3:]
    if check in ("overlap", "max-overlap"):
        m = max_overlap(intervals(tasks, lambda t: t["state"] == "done"))
        print("# most pages at once: %d" % m)
        ok = m == int(a[0]) if check == "overlap" else m <= int(a[0])
    elif check == "pids":
        pids = {t["worker_pid"] for t in tasks if t["state"] == "done"}
        print("# worker pids: %s" % sorted(pids))
        ok = len(pids) == int(a[0])
    elif check == "state":
        t = [t for t in tasks if t["id"] == a[0]][0]
        print("# %s: %s, %d deliveries, %s" % (a[0], t["state"], t["deliveries"], t["reason"]))
        ok = t["state"] == a[1] and (len(a) < 3 or t["deliveries"] == int(a[2]))
    elif check == "serial":
        big = intervals(tasks, lambda t: a[0] in (t["source"] or ""))
        small = intervals(tasks, lambda t: a[1] in (t["source"] or ""))
        print("# big pages: %s" % big)
        alone = max_overlap(big) == 1 and len(big) >= 2
        beside = any(s < bf and f > bs for bs, bf in big for s, f in small)
        print("# big pages one at a time: %s; a small page beside a big one: %s" % (alone, beside))
        ok = alone and beside
    elif check == "order":
        hi = [t["started"] for t in tasks if t["group"] == a[0]]
        lo = [t["started"] for t in tasks if t["group"] == a[1]]
        ok = bool(hi) and bool(lo) and max(hi) <= min(lo)
        print("# %s started %s, %s started %s" % (a[0], sorted(hi), a[1], sorted(lo)))
    else:
        sys.exit("unknown check " + check)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
