#!/usr/bin/env python3
"""page_parity.py DIR: the figures of bench/lstm_pages.sh from DIR/in (the texts, LANG-pNN
and LANG-nNN, and their renders, LANG-?NN-{clean,degraded,colour}.png) and
DIR/{lstm,tesseract} (each engine's text of each render). Lines are aligned in order
(cer.identical_lines), so a line one engine splits or drops costs that line only."""
import glob
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from cer import identical_lines, levenshtein, text_lines  # noqa: E402


def main():
    d = sys.argv[1]
    print("%-5s %-7s %-9s %6s %16s %9s %9s %9s" % ("lang", "text", "render", "lines",
                                                   "identical", "CER l/t", "CER lstm",
                                                   "CER tess"))
    total = {"all": [0, 0], "native": [0, 0]}
    for lang, text in (("eng", "p"), ("san", "p"), ("san", "n"), ("tam", "p"), ("tam", "n"),
                       ("hin", "p"), ("hin", "n")):
        for render in ("clean", "degraded", "colour"):
            same = n = 0
            dist = [0, 0, 0]
            size = [0, 0]
            for src in sorted(glob.glob(os.path.join(d, "in", lang + "-" + text + "??"))):
                base = os.path.basename(src) + "-" + render
                ours = text_lines(os.path.join(d, "lstm", base + ".txt"))
                theirs = text_lines(os.path.join(d, "tesseract", base + ".txt"))
                truth = text_lines(src)
                k, t = identical_lines(ours, theirs)
                same += k
                n += t
                o, t, r = " ".join(ours), " ".join(theirs), " ".join(truth)
                dist[0] += levenshtein(t, o)
                dist[1] += levenshtein(r, o)
                dist[2] += levenshtein(r, t)
                size[0] += len(t)
                size[1] += len(r)
            native = lang == "eng" or text == "n"
            for key in ("all", "native") if text == "p" else ("native",):
                if key == "all" or native:
                    total[key][0] += same
                    total[key][1] += n
            print("%-5s %-7s %-9s %6d %9d %5.1f%% %9.4f %9.4f %9.4f" % (
                lang, "native" if native else "mixed", render, n, same, 100.0 * same / max(n, 1),
                dist[0] / max(size[0], 1), dist[1] / max(size[1], 1), dist[2] / max(size[1], 1)))
    for key, what in (("all", "the catalogues' lines as they are (mixed)"),
                      ("native", "lines in the language's script (native)")):
        print("lines identical, %s: %d of %d (%.1f%%)" % (
            what, total[key][0], total[key][1], 100.0 * total[key][0] / max(total[key][1], 1)))


if __name__ == "__main__":
    main()
