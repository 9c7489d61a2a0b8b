#!/usr/bin/env python3
"""Writes fuzz/corpus/model/tiny.traineddata: a small traineddata file in the format of
Debian's tessdata_fast models (int8 weights), for the model harness's seed corpus, since a
real model is megabytes. Its character set, recoder, version and punctuation and number
dictionaries are eng.traineddata's (extracted with combine_tessdata -u), its word
dictionary a few words (wordlist2dawg WORDS ENG_PREFIXsmall-word-dawg
ENG_PREFIXlstm-unicharset, of the words below); its network is a
new, untrained one: Input (1 pixel high) -> LSTM of 8 -> Softmax over eng's 111 classes,
with weights from a fixed pseudo-random sequence, so the forward pass and the decoder run.

  fuzz/make-model-seed.py ENG_PREFIX OUT   (ENG_PREFIX: where combine_tessdata -u put eng.*)
"""
import struct
import sys

CLASSES = 111  # eng's network outputs; its null char is the last
NULL_CHAR = 110
HIDDEN = 8


def s(text):
    b = text.encode()
    return struct.pack("<I", len(b)) + b


def node(kind, ni, no, name, body, weights=0):
    """A node as the reader expects it; weights: its num_weights (the sum of its matrices'
    sizes, or of its children's)."""
    return (b"\0" + s(kind) + b"\0\0" + struct.pack("<iiii", 0, ni, no, weights) + s(name)
            + body)


seed = 12345


def rnd():
    global seed
    seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
    return seed


def matrix(rows, cols):
    w = bytes(((rnd() >> 8) % 61 - 30) & 0xFF for _ in range(rows * cols))
    scales = b"".join(struct.pack("<d", 0.05 * 127) for _ in range(rows))
    return (b"\x01" + struct.pack("<ii", rows, cols) + b"\0" + w + struct.pack("<I", rows)
            + scales)


def network():
    inp = node("Input", 1, 1, "Input", struct.pack("<iiiii", 1, 1, 0, 1, 0))
    na = 1 + HIDDEN
    lstm_w = 4 * HIDDEN * (na + 1)
    lstm = node("LSTM", 1, HIDDEN, "Lfx%d" % HIDDEN,
                struct.pack("<i", na) + b"".join(matrix(HIDDEN, na + 1) for _ in range(4)),
                lstm_w)
    fc_w = CLASSES * (HIDDEN + 1)
    fc = node("Softmax", HIDDEN, CLASSES, "Output", matrix(CLASSES, HIDDEN + 1), fc_w)
    series = node("Series", 1, CLASSES, "Series", struct.pack("<I", 3) + inp + lstm + fc,
                  lstm_w + fc_w)
    spec = "[1,1,0,1Lfx%dO1c%d]" % (HIDDEN, CLASSES)
    return (series + s(spec) + struct.pack("<iiii", 65, 0, 0, NULL_CHAR)
            + struct.pack("<fff", 0.999, 0.001, 0.5))


WORDS = "the of and page text book Hello lines second"


def main():
    prefix, out = sys.argv[1], sys.argv[2]
    parts = {17: network()}
    for idx, name in ((18, "lstm-punc-dawg"), (19, "small-word-dawg"), (20, "lstm-number-dawg"), (21, "lstm-unicharset"),
                      (22, "lstm-recoder"), (23, "version")):
        with open(prefix + name, "rb") as f:
            parts[idx] = f.read()
    count = 24
    offset = 4 + 8 * count
    table, data = [], b""
    for i in range(count):
        if i in parts:
            table.append(offset + len(data))
            data += parts[i]
        else:
            table.append(-1)
    with open(out, "wb") as f:
        f.write(struct.pack("<i", count) + b"".join(struct.pack("<q", o) for o in table) + data)


main()
