#!/usr/bin/env python3
"""The figures of bench/orient.sh from its work folder: 1 - CER before (rotate-pages and
deskew off) and after (on), orientation accuracy (ours and the osd model's) and the time
each step adds to a page."""
import glob, json, os, re, statistics, sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from cer import norm  # noqa: E402


def lev(a, b):
    """Levenshtein distance of a and b, bit-parallel (Myers, Hyyro): tools/cer.py's in
    pure Python takes a second a page, this a millisecond."""
    if not a:
        return len(b)
    m, peq = len(a), {}
    for i, c in enumerate(a):
        peq[c] = peq.get(c, 0) | (1 << i)
    mask, pv, mv, score, hb = (1 << m) - 1, (1 << m) - 1, 0, m, 1 << (m - 1)
    for c in b:
        eq = peq.get(c, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & mask)
        mh = pv & xh
        if ph & hb:
            score += 1
        elif mh & hb:
            score -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = mh | (~(xv | ph) & mask)
        mv = ph & xv
    return score


def cer(ref, hyp):
    return lev(ref, hyp) / len(ref) if ref else float(bool(hyp))

work = sys.argv[1]
LOG = re.compile(r"\[([0-9a-f-]{36})\] debug: orientation: .*; (\d+) \+ (\d+) ms")


def step_times(mode):
    t = {}
    for line in open(os.path.join(work, mode + ".log"), encoding="utf-8", errors="replace"):
        m = LOG.search(line)
        if m:
            t[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return t


steps = step_times("on")
# variant name -> (expected rotation, kind)
def variant(name):
    m = re.match(r"(\w+)-p(\d\d)-(clean|degraded)(?:-(rot\d+|skew\w+))?$", name)
    lang, page, render, v = m.groups()
    if not v:
        return lang, page, render, "upright", 0
    if v.startswith("rot"):
        return lang, page, render, "turned", (360 - int(v[3:])) % 360
    return lang, page, render, "tilted", 0


rows = {}
orient = {"ours": [0, 0], "osd": [0, 0]}
osd_lang = {}
wrong = []
times = {}  # (lang, kind) -> lists
for f in sorted(glob.glob(os.path.join(work, "in", "*.png"))):
    name = os.path.basename(f)[:-4]
    lang, page, render, kind, want = variant(name)
    ref = norm(open(os.path.join(work, "in", "%s-p%s" % (lang, page)), encoding="utf-8").read())
    r = rows.setdefault((lang, render), {})
    for mode in ("off", "on"):
        txt = norm(open(os.path.join(work, mode, name + ".txt"), encoding="utf-8").read())
        r.setdefault((kind, mode), []).append(1 - min(1.0, cer(ref, txt)))
    j = json.load(open(os.path.join(work, "on", name + ".json"), encoding="utf-8"))
    off = json.load(open(os.path.join(work, "off", name + ".json"), encoding="utf-8"))
    orient["ours"][1] += 1
    if j["rotation"] == want:
        orient["ours"][0] += 1
    else:
        wrong.append("%s: %d, not %d" % (name, j["rotation"], want))
    if kind != "tilted":
        osd = os.path.join(work, "osd", name + ".rot")
        got = open(osd).read().strip() if os.path.exists(osd) else ""
        right = got != "" and int(got) == want
        orient["osd"][1] += 1
        orient["osd"][0] += right
        ol = osd_lang.setdefault(lang, [0, 0])
        ol[0] += right
        ol[1] += 1
    t = times.setdefault((lang, kind), {"off": [], "on": [], "lines": [], "band": []})
    t["off"].append(off["elapsed_ms"])
    t["on"].append(j["elapsed_ms"])
    if j["id"] in steps:
        t["lines"].append(steps[j["id"]][0])
        t["band"].append(steps[j["id"]][1])

print("1 - CER (mean over pages), rotate-pages and deskew off -> on")
print("%-4s %-9s %-17s %-17s %-17s" % ("lang", "render", "upright", "turned 90/180/270", "tilted -5..+10"))
for (lang, render), r in sorted(rows.items()):
    cells = []
    for kind in ("upright", "turned", "tilted"):
        cells.append("%.3f -> %.3f" % (statistics.mean(r[(kind, "off")]), statistics.mean(r[(kind, "on")])))
    print("%-4s %-9s %-17s %-17s %-17s" % (lang, render, *cells))
print("orientation right: ours %d/%d (%.1f %%); the osd model %d/%d (%.1f %%) of the upright and "
      "turned (%s)"
      % (orient["ours"][0], orient["ours"][1], 100.0 * orient["ours"][0] / orient["ours"][1],
         orient["osd"][0], orient["osd"][1], 100.0 * orient["osd"][0] / max(1, orient["osd"][1]),
         ", ".join("%s %d/%d" % (l, *osd_lang[l]) for l in sorted(osd_lang))))
for w in wrong:
    print("  wrong: " + w)
print("time per page (mean): both off, on; the steps from the worker's log, share of the page "
      "with both off (an upright page's off and on read the same text; a turned or tilted "
      "page's off reading is of another, wrong text)")
for (lang, kind), t in sorted(times.items()):
    base = statistics.mean(t["off"])
    lines, band = statistics.mean(t["lines"] or [0]), statistics.mean(t["band"] or [0])
    print("%-4s %-8s %5.0f ms, %5.0f ms; lines, skew, deskew %3.0f ms (%4.1f %%), up or down "
          "%3.0f ms (%4.1f %%): steps %4.1f %%"
          % (lang, kind, base, statistics.mean(t["on"]), lines, 100 * lines / base, band,
             100 * band / base, 100 * (lines + band) / base))
