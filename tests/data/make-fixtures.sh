#!/usr/bin/env bash
# Makes the test fixtures in $1 (default build/fixtures) from the texts in
# tests/data/text: pages rendered with Noto fonts by pango-view, converted
# by the vips CLI into every accepted format, a page whose line positions
# are known, and the bad inputs (mkbad.py). Idempotent: does nothing when
# the fixtures are newer than this script and the texts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-build/fixtures}
mkdir -p "$out"
stamp="$out/.stamp"
if [ -f "$stamp" ] && [ -z "$(find "$here" -newer "$stamp" -type f | head -1)" ]; then
    exit 0
fi

source "$here/../../tools/fonts.sh"

render() { # render LANG OUT [extra pango-view args]: 300 dpi, black on white
    local lang=$1 dst=$2
    shift 2
    pango-view --font="$(font_of "$lang")" --dpi=300 --margin=150 --background=white \
        --foreground=black -q "$@" -o "$dst" "$here/text/$lang.txt"
}

for l in eng san tam hin; do
    render "$l" "$out/$l.rgb.png"
    # Grey, as a scanner gives; the RGB original stays for the colour path.
    vips colourspace "$out/$l.rgb.png" "$out/$l.png" b-w
    render "$l" "$out/$l.pdf"
done
vips copy "$out/eng.png" "$out/eng.jpg[Q=92]"
vips copy "$out/eng.png" "$out/eng.webp[Q=95]"
vips copy "$out/eng.png" "$out/eng.pnm"
vips copy "$out/eng.png" "$out/eng.tif"
vips copy "$out/eng.png" "$out/eng.gif"
vips copy "$out/tam.png" "$out/tam.tif[compression=deflate]"
# RGBA with a transparent background: must be flattened on white.
vips bandjoin_const "$out/eng.rgb.png" "$out/eng.rgba.png" 255
# 16-bit grey.
vips colourspace "$out/eng.png" "$out/eng16.png" grey16

# A two-page TIFF (English, Sanskrit) on pages of the same size.
w=1700 h=700
vips gravity "$out/eng.png" "$out/_p1.v" north-west $w $h --extend white
vips gravity "$out/san.png" "$out/_p2.v" north-west $w $h --extend white
vips join "$out/_p1.v" "$out/_p2.v" "$out/_tall.v" vertical
vips copy "$out/_tall.v" "$out/two.tif[page-height=$h,compression=deflate]"
# A two-page PDF: English, then Sanskrit.
pdfunite "$out/eng.pdf" "$out/san.pdf" "$out/two.pdf"

# EXIF orientation 6 (rotate 90 clockwise to view): the pixels are stored
# turned 90 degrees anticlockwise.
vips rot "$out/eng.png" "$out/_rot.v" d270
vips copy "$out/_rot.v" "$out/_rot.jpg[Q=92]"
python3 "$here/mkbad.py" exif "$out/_rot.jpg" "$out/eng-exif6.jpg" 6

# Known line positions: each line of eng.txt rendered alone, placed on a
# white A4-ish canvas at known offsets; lines.tsv gives each line's ink box.
canvas_w=2480 canvas_h=1754
vips black "$out/_canvas.v" $canvas_w $canvas_h --bands 1
vips linear "$out/_canvas.v" "$out/_white.v" 1 255 --uchar
cp "$out/_white.v" "$out/_acc.v"
: >"$out/lines.tsv"
y=220
i=0
while IFS= read -r line; do
    i=$((i + 1))
    printf '%s\n' "$line" >"$out/_line.txt"
    pango-view --font="Noto Serif 12" --dpi=300 --margin=0 --background=white \
        --foreground=black -q -o "$out/_line.png" "$out/_line.txt"
    vips colourspace "$out/_line.png" "$out/_line.v" b-w
    read -r left top width height <<<"$(vips find_trim "$out/_line.v" --background 255 | tr '\n' ' ')"
    x=$((180 + 60 * i))
    vips insert "$out/_acc.v" "$out/_line.v" "$out/_acc2.v" $x $y
    mv "$out/_acc2.v" "$out/_acc.v"
    printf '%d\t%d\t%d\t%d\t%s\n' $((x + left)) $((y + top)) $((x + left + width)) \
        $((y + top + height)) "$line" >>"$out/lines.tsv"
    y=$((y + 260))
done <"$here/text/eng.txt"
vips copy "$out/_acc.v" "$out/lines.png"

# A big page: a 6000 x 6000 canvas with the English text in a corner. With resizing off,
# Tesseract's peak RSS on it is about 170 MB: it crosses small memory limits for real.
vips embed "$out/eng.png" "$out/big.png" 200 200 6000 6000 --extend white

# rotate-pages and deskew (test_orient.sh): pages turned clockwise by vips rot (d90 = 90
# degrees clockwise: read upright after a turn of 270), pages tilted by vips rotate
# (positive = clockwise, lines falling to the right), and a blank page.
for l in eng san tam lines; do
    for d in 90 180 270; do
        vips rot "$out/$l.png" "$out/$l-rot$d.png" d$d
    done
done
vips rotate "$out/eng.png" "$out/eng-skew5.png" 5 --background 255
vips rotate --background 255 -- "$out/eng.png" "$out/eng-skewm4.png" -4
vips rotate "$out/san.png" "$out/san-skew3.png" 3 --background 255
vips rotate "$out/lines.png" "$out/lines-skew3.png" 3 --background 255
vips rotate "$out/eng.png" "$out/_skew.v" 4 --background 255
vips rot "$out/_skew.v" "$out/eng-rot90-skew4.png" d90
vips black "$out/_blank.v" 1200 900 --bands 1
vips linear "$out/_blank.v" "$out/blank.png" 1 255 --uchar

python3 "$here/mkbad.py" all "$out"

# Searchable PDFs (test_pdf.sh): scans as PDFs with no text of their own, each page an
# image (Pillow, Debian's python3-pil, stores it as a JPEG): Sanskrit, Tamil, English; a
# four-page book (English, Sanskrit, English, Sanskrit); and the English page stored
# sideways with /Rotate 90 (qpdf), so that it is shown, and rendered, upright.
/usr/bin/python3 - "$out" <<'PY'
import sys
from PIL import Image
out = sys.argv[1]
for l in ("san", "tam", "eng"):
    Image.open(f"{out}/{l}.png").save(f"{out}/{l}-scan.pdf", resolution=300)
book = [Image.open(f"{out}/{l}.png").convert("L") for l in ("eng", "san", "eng", "san")]
book[0].save(f"{out}/book-scan.pdf", resolution=300, save_all=True, append_images=book[1:])
Image.open(f"{out}/eng.png").rotate(90, expand=True).save(f"{out}/_rot90.pdf", resolution=300)
PY
qpdf --rotate=+90:1 "$out/_rot90.pdf" "$out/eng-rot90.pdf"
rm -f "$out"/_*
touch "$stamp"
