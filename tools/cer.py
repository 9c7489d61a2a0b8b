#!/usr/bin/env python3
"""cer.py REF HYP: prints the character error rate of HYP against REF.
cer.py --lines A B: prints "K of N", the lines of A and B that are identical.

Both texts are normalised first: zero-width joiners and non-joiners (which
Tesseract emits after a Tamil virama) removed, whitespace runs collapsed to
one space. CER = Levenshtein distance over code points / length of REF.
"""
import difflib
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


def text_lines(path):
    """The non-empty lines of a text file, each normalised as above; [] when it is missing."""
    try:
        with open(path, encoding="utf-8") as f:
            return [norm(x) for x in f if norm(x)]
    except FileNotFoundError:
        return []


def identical_lines(a, b):
    """(identical, total): the lines of a and b that are the same, aligned in order (a line
    one side splits or drops costs that line only), over the longer of the two."""
    m = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return sum(k.size for k in m.get_matching_blocks()), max(len(a), len(b))


def main():
    if sys.argv[1] == "--lines":
        print("%d of %d" % identical_lines(text_lines(sys.argv[2]), text_lines(sys.argv[3])))
        return
    ref = norm(open(sys.argv[1], encoding="utf-8").read())
    hyp = norm(open(sys.argv[2], encoding="utf-8").read())
    if not ref:
        print("1.0" if hyp else "0.0")
        return
    print("%.4f" % (levenshtein(ref, hyp) / len(ref)))


if __name__ == "__main__":
    main()
