#!/usr/bin/env python3
"""memsample.py [--interval S] -- CMD...: runs CMD and samples the memory of its
whole process tree (RSS from /proc/PID/status, PSS from /proc/PID/smaps_rollup)
until it ends. Prints one line: wall seconds, peak total RSS MB, peak total PSS MB,
peak RSS MB of one process, exit status."""
import os
import subprocess
import sys
import time


def children():
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(p))
        except (OSError, IndexError, ValueError):
            pass
    return kids


def tree(root):
    kids = children()
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def field(path, name):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    args = sys.argv[1:]
    interval = 0.1
    if args and args[0] == "--interval":
        interval = float(args[1])
        args = args[2:]
    if args and args[0] == "--":
        args = args[1:]
    t0 = time.time()
    proc = subprocess.Popen(args)
    peak_rss = peak_pss = peak_one = 0
    while proc.poll() is None:
        rss = pss = 0
        for p in tree(proc.pid):
            r = field("/proc/%d/status" % p, "VmRSS")
            rss += r
            peak_one = max(peak_one, r)
            pss += field("/proc/%d/smaps_rollup" % p, "Pss")
        peak_rss = max(peak_rss, rss)
        peak_pss = max(peak_pss, pss)
        time.sleep(interval)
    print("%.2f %.0f %.0f %.0f %d" % (time.time() - t0, peak_rss / 1024, peak_pss / 1024,
                                      peak_one / 1024, proc.returncode))


if __name__ == "__main__":
    main()
