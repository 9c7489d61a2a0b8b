#!/usr/bin/env python3
"""cer.py REF HYP: prints the character error rate of HYP against REF.

Both texts are normalised first: zero-width joiners and non-joiners (which
Tesseract emits after a Tamil virama) removed, whitespace runs collapsed to
one space. CER = Levenshtein distance over code points / length of REF.
"""
import re
import sys


def norm(s):
    s = s.replace("\u200c", "").replace("\u200d", "").replace("\f", " ")
    return re.sub(r"\s+", " ", s).strip()


def levenshtein(a, b):
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def main():
    ref = norm(open(sys.argv[1], encoding="utf-8").read())
    hyp = norm(open(sys.argv[2], encoding="utf-8").read())
    if not ref:
        print("1.0" if hyp else "0.0")
        return
    print("%.4f" % (levenshtein(ref, hyp) / len(ref)))


if __name__ == "__main__":
    main()
