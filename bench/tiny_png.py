"""tiny_png.py OUT: a 64 x 64 white grey PNG, written without any imaging library (the empty
page that bench/queue.sh and bench/redis_rtt.sh queue)."""
import struct, sys, zlib

w = h = 64
raw = b"".join(b"\0" + bytes([255]) * w for _ in range(h))


def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)


png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
