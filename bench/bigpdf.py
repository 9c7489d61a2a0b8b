#!/usr/bin/env python3
"""Writes a one-page PDF of SIDE x SIDE inches with lines of Helvetica text (no font
embedded: the renderer substitutes one), for the page-memory benchmark.
    bigpdf.py OUT [SIDE_INCHES]"""
import sys

out_path = sys.argv[1]
side = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
pt = side * 72
lines = ["The quick brown fox jumps over the lazy dog %d" % i for i in range(30)]
ops = ["BT", "/F1 40 Tf", "50 TL", "100 %d Td" % (pt - 160)]
ops += ["(%s) Tj T*" % line for line in lines]
ops.append("ET")
content = "\n".join(ops).encode()
objs = [
    b"<< /Type /Catalog /Pages 2 0 R >>",
    b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents 4 0 R"
    b" /Resources << /Font << /F1 5 0 R >> >> >>" % (pt, pt),
    b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
    b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
]
pdf = b"%PDF-1.4\n"
offsets = []
for i, o in enumerate(objs, 1):
    offsets.append(len(pdf))
    pdf += b"%d 0 obj\n" % i + o + b"\nendobj\n"
xref = len(pdf)
pdf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
pdf += b"".join(b"%010d 00000 n \n" % o for o in offsets)
pdf += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
with open(out_path, "wb") as f:
    f.write(pdf)
