#!/usr/bin/env python3
"""mix_pages.py DIR: makes issue 18's 38-page mix in DIR, once (DIR/pages.tsv says it is
done): each page as DIR/pages/NN-KIND-LANG.{png,jpg} beside NN-KIND-LANG.gt.txt, the text
rendered on it, and one line per page in pages.tsv: file, languages, kind, width, height.

- 20 synthetic A4 300 dpi pages (7 san, 7 tam, 6 eng), rendered as bench/run.sh renders
  its pages (pango-view, Noto fonts, 2080 px of text width, grey, 200 px margins), each
  with its own text and a font of its own (serif or sans, 10 to 12 pt).
- 18 SYNTHETIC STAND-INS FOR REAL SCANS (no real scan is on this machine and nothing is
  downloaded): rendered text degraded as a scanner and a book would degrade it: grey
  paper and ink of varied tones, uneven illumination (a darker gutter and a blotchy low-
  frequency field), Gaussian grain, a slight blur, a skew of at most 1 degree, JPEG
  compression for 7 of them; 2 of them in two columns. Their sizes are spread evenly on
  a log scale from 0.3 to 19 megapixels, the largest 4110 x 4621 grey, and their
  languages are mixed as a library's are: eng, san, tam, san+eng and tam+eng (pages
  with paragraphs of both scripts).

The texts are real text the machine has (bench/texts.sh: GPL-3 English, Marathi
catalogues for the Sanskrit model, Tamil catalogues; lines with Latin letters left out of
the Indic ones) and tests/data/text. Everything is seeded: the same pages every time."""
import math
import os
import random
import subprocess
import sys
import tempfile

from PIL import Image, ImageChops, ImageFilter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FONTS = {"eng": ["Noto Serif", "Noto Sans"],
         "san": ["Noto Serif Devanagari", "Noto Sans Devanagari"],
         "tam": ["Noto Serif Tamil", "Noto Sans Tamil"]}


def texts(tmp):
    """Lines of real text per language, Indic ones without Latin letters."""
    subprocess.run(["bash", "-c", 'source "$1/bench/texts.sh"; bench_texts "$2" 4000', "_",
                    ROOT, tmp], check=True)
    out = {}
    for lang in ("eng", "san", "tam"):
        with open(os.path.join(tmp, lang + ".txt"), encoding="utf-8") as f:
            lines = [x.strip() for x in f if x.strip()]
        with open(os.path.join(ROOT, "tests/data/text", lang + ".txt"), encoding="utf-8") as f:
            lines += [x.strip() for x in f if x.strip()]
        if lang != "eng":
            lines = [x for x in lines if not any("a" <= c.lower() <= "z" for c in x)]
        out[lang] = lines
    return out


class Source:
    """Draws paragraphs of 2 to 6 lines joined by spaces, from a language's lines in a
    seeded order, never the same line twice until all were used."""

    def __init__(self, lines, rng):
        self.lines = lines[:]
        rng.shuffle(self.lines)
        self.i = 0
        self.rng = rng

    def para(self):
        n = self.rng.randint(2, 6)
        out = [self.lines[(self.i + k) % len(self.lines)] for k in range(n)]
        self.i += n
        return " ".join(out)


def render(paras, font, width, dpi, tmp):
    """A grey image of PARAS (paragraphs separated by a blank line) in FONT, WIDTH px wide
    (pango-view's --width is in points: WIDTH px at DPI)."""
    txt = os.path.join(tmp, "t.txt")
    png = os.path.join(tmp, "t.png")
    with open(txt, "w", encoding="utf-8") as f:
        f.write("\n\n".join(paras) + "\n")
    subprocess.run(["pango-view", "--font=" + font, "--dpi=%d" % dpi, "--margin=0",
                    "--width=%d" % (width * 72 // dpi), "--wrap=word", "--background=white",
                    "--foreground=black", "-q", "-o", png, txt], check=True)
    with Image.open(png) as im:
        return im.convert("L")


def fit(make_paras, font, width, dpi, max_h, tmp):
    """Renders as much text as fits MAX_H px: paragraphs from make_paras() are added
    until the block overflows, then the last ones dropped, one by one at the end so that
    the page is full. Returns (image, paragraphs)."""
    paras = [make_paras() for _ in range(4)]
    img = render(paras, font, width, dpi, tmp)
    while img.height <= max_h:  # overshoot, from the height so far
        more = max(2, int(len(paras) * (max_h / max(img.height, 1) * 1.15 - 1)))
        paras += [make_paras() for _ in range(more)]
        img = render(paras, font, width, dpi, tmp)
    drawn = paras
    while img.height > max_h and len(paras) > 1:
        keep = max(1, min(len(paras) - 1, int(len(paras) * max_h / img.height)))
        paras = paras[:keep]
        img = render(paras, font, width, dpi, tmp)
    while img.height <= max_h and len(paras) < len(drawn):  # the page full: add back
        more = render(drawn[:len(paras) + 1], font, width, dpi, tmp)
        if more.height > max_h:
            break
        img, paras = more, drawn[:len(paras) + 1]
    if img.height > max_h:  # one paragraph too long: cut it by lines of its source
        words = paras[0].split(" ")
        while img.height > max_h and len(words) > 3:
            words = words[:int(len(words) * max_h / img.height * 0.95)]
            paras = [" ".join(words)]
            img = render(paras, font, width, dpi, tmp)
    return img, paras


def a4_page(lang, src, rng, tmp):
    font = "%s %d" % (rng.choice(FONTS[lang]), rng.choice([10, 11, 11, 12]))
    block, paras = fit(src[lang].para, font, 2080, 300, 3100, tmp)
    page = Image.new("L", (2480, 3508), 255)
    page.paste(block, (200, 200))
    return page, paras


def illumination(w, h, rng):
    """A low-frequency field of 0.78 to 1.0: blotches and a darker edge (the gutter)."""
    gw, gh = 5, 6
    field = Image.new("L", (gw, gh))
    field.putdata([rng.randint(215, 255) for _ in range(gw * gh)])
    field = field.resize((w, h), Image.BICUBIC)
    edge = Image.linear_gradient("L").rotate(rng.choice([90, -90, 0, 180]))
    edge = edge.resize((w, h), Image.BILINEAR).point(lambda v: 200 + v * 55 // 255)
    return ImageChops.multiply(field.point(lambda v: min(255, v + 20)), edge)


def scan_page(i, w, h, langs, columns, src, rng, tmp):
    """Page I of the scans: W x H grey, LANGS' paragraphs (alternating for two scripts)."""
    em = 20 + 50 * i / 17  # body text em in px: 20 on the smallest page, 70 on the largest
    pt = rng.choice([10, 11, 12])
    dpi = int(em * 72 / pt)
    mx, my = int(w * rng.uniform(0.05, 0.09)), int(h * rng.uniform(0.04, 0.07))
    gap = int(w * 0.04)
    colw = (w - 2 * mx - (columns - 1) * gap) // columns
    script = langs[0]
    font = "%s %d" % (rng.choice(FONTS[script]), pt)
    if len(langs) > 1:
        font = "%s, Noto Serif %d" % (font.rsplit(" ", 1)[0], pt)
    turn = [0]

    def para():
        lang = langs[turn[0] % len(langs)] if len(langs) > 1 else script
        if len(langs) > 1 and rng.random() < 0.3:
            turn[0] += 1
        turn[0] += 1
        return src[lang].para()

    page = Image.new("L", (w, h), 255)
    truth = []
    for c in range(columns):
        block, paras = fit(para, font, colw, dpi, h - 2 * my, tmp)
        page.paste(block, (mx + c * (colw + gap), my))
        truth += paras
    angle = rng.uniform(0.2, 1.0) * rng.choice([-1, 1])
    page = page.rotate(angle, resample=Image.BICUBIC, fillcolor=255)
    page = page.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 0.9) * em / 40))
    paper, ink = rng.randint(195, 235), rng.randint(20, 70)
    page = page.point(lambda v: ink + (paper - ink) * v // 255)
    page = ImageChops.multiply(page, illumination(w, h, rng))
    noise = Image.effect_noise((w, h), rng.uniform(8, 22))
    page = ImageChops.add(page, noise, scale=1.0, offset=-128)
    return page, truth, angle


def main():
    out = sys.argv[1]
    manifest = os.path.join(out, "pages.tsv")
    if os.path.exists(manifest):
        return
    pages_dir = os.path.join(out, "pages")
    os.makedirs(pages_dir, exist_ok=True)
    rng = random.Random(18)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lines = texts(tmp)
        src = {lang: Source(lines[lang], random.Random(lang)) for lang in lines}
        n = 0
        for lang, count in (("san", 7), ("tam", 7), ("eng", 6)):
            for _ in range(count):
                n += 1
                page, paras = a4_page(lang, src, rng, tmp)
                name = "%02d-a4-%s" % (n, lang)
                page.save(os.path.join(pages_dir, name + ".png"), dpi=(300, 300))
                rows.append((name + ".png", lang, "a4", 2480, 3508, paras))
                print("mix_pages: %s" % name, file=sys.stderr)
        langs = (["eng"] * 5 + ["san"] * 3 + ["tam"] * 3 + ["san+eng"] * 5 + ["tam+eng"] * 2)
        random.Random(1).shuffle(langs)
        jpeg = set(random.Random(2).sample(range(17), 7))
        for i in range(18):
            if i == 17:
                w, h = 4110, 4621
            else:
                mp = 0.3e6 * (19e6 / 0.3e6) ** (i / 17)
                aspect = rng.uniform(1.12, 1.5)
                w = int(math.sqrt(mp / aspect))
                h = int(mp / w)
            columns = 2 if i in (11, 17) else 1
            page, paras, angle = scan_page(i, w, h, langs[i].split("+"), columns, src, rng,
                                           tmp)
            n += 1
            name = "%02d-scan-%s" % (n, langs[i].replace("+", "_"))
            if i in jpeg:
                name += ".jpg"
                page.save(os.path.join(pages_dir, name), quality=rng.randint(55, 85))
            else:
                name += ".png"
                page.save(os.path.join(pages_dir, name))
            rows.append((name, langs[i], "scan", w, h, paras))
            print("mix_pages: %s %dx%d %.1f MP, %d column(s), skew %.2f deg"
                  % (name, w, h, w * h / 1e6, columns, angle), file=sys.stderr)
    with open(manifest + ".tmp", "w", encoding="utf-8") as m:
        for name, lang, kind, w, h, paras in rows:
            base = os.path.splitext(name)[0]
            with open(os.path.join(pages_dir, base + ".gt.txt"), "w", encoding="utf-8") as f:
                f.write("\n\n".join(paras) + "\n")
            m.write("%s\t%s\t%s\t%d\t%d\n" % (name, lang, kind, w, h))
    os.rename(manifest + ".tmp", manifest)


if __name__ == "__main__":
    main()
