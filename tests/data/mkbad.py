#!/usr/bin/env python3
"""Makes hostile and broken inputs for ocrpool's tests, with the standard
library only.

  mkbad.py all DIR              bad inputs from DIR/eng.{png,jpg,pdf} into DIR
  mkbad.py exif IN.jpg OUT.jpg N  copy of a JPEG with EXIF orientation N
"""
import os
import re
import struct
import sys
import zlib


def png_chunk(kind, data):
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png(width, height, bit_depth, colour_type, idat):
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def bomb(width, height):
    """A 1-bit grey PNG of white rows: tiny on disk, width x height pixels."""
    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    parts = []
    chunk = row * 1000
    for _ in range(height // 1000):
        parts.append(comp.compress(chunk))
    parts.append(comp.compress(row * (height % 1000)))
    parts.append(comp.flush())
    return png(width, height, 1, 0, b"".join(parts))


def with_exif(jpeg, orientation):
    assert jpeg[:2] == b"\xff\xd8"
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + app1 + jpeg[2:]


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def all_bad(d):
    eng_png = read(os.path.join(d, "eng.png"))
    eng_jpg = read(os.path.join(d, "eng.jpg"))
    eng_pdf = read(os.path.join(d, "eng.pdf"))
    bad = os.path.join(d, "bad")
    os.makedirs(bad, exist_ok=True)
    write(os.path.join(bad, "empty.png"), b"")
    write(os.path.join(bad, "truncated.png"), eng_png[: len(eng_png) * 55 // 100])
    write(os.path.join(bad, "truncated.jpg"), eng_jpg[: len(eng_jpg) // 2])
    write(os.path.join(bad, "truncated.pdf"), eng_pdf[: len(eng_pdf) // 2])
    write(os.path.join(bad, "text.png"), b"This is a plain text file, not an image.\n" * 20)
    # A PDF whose cross-reference offsets all point to the wrong place.
    broken = re.sub(rb"(\d{10}) (\d{5}) n", lambda m: b"%010d %s n" % (int(m.group(1)) + 7, m.group(2)),
                    eng_pdf)
    broken = re.sub(rb"startxref\s+\d+", b"startxref\n12", broken)
    write(os.path.join(bad, "badxref.pdf"), broken)
    # A header that claims 65535 x 65535 grey pixels, with almost no data.
    write(os.path.join(bad, "huge-header.png"), png(65535, 65535, 8, 0, zlib.compress(b"\x00" * 100)))
    # 30000 x 30000 pixels, under a megabyte on disk.
    write(os.path.join(bad, "bomb.png"), bomb(30000, 30000))
    # Fine inputs with a misleading name.
    write(os.path.join(d, "jpeg-named.png"), eng_jpg)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "all":
        all_bad(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "exif":
        write(sys.argv[3], with_exif(read(sys.argv[2]), int(sys.argv[4])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
