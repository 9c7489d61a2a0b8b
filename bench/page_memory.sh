#!/usr/bin/env bash
# A page's peak memory against its pixel count (not part of `make test`): each page OCRed
# alone by `ocrpool ocr -j 1`, its worker's peak RSS during the page less the zygote's RSS
# (the engine and models, which the worker shares), divided by the pixels the engine gets
# (after max-image-size). The memory budget's estimate is pixels x page-memory-factor.
#   bench/page_memory.sh [ocr options, e.g. --engine tesseract]
# The engine is lstm (the default engine) unless ENGINE or the options name another.
# OCRPOOL=path runs another build (an older one, for a before/after).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
OCRPOOL=${OCRPOOL:-$BUILD/ocrpool}
work=$BUILD/bench/pagemem
fx=$BUILD/fixtures
mkdir -p "$work"
tests/data/make-fixtures.sh "$fx" >/dev/null
[ -f "$work/a4.png" ] || vips embed "$fx/eng.png" "$work/a4.png" 300 300 2480 3508 --extend white
[ -f "$work/a4.jpg" ] || vips copy "$work/a4.png" "$work/a4.jpg[Q=90]"
if [ ! -f "$work/scan.jpg" ]; then # 4110 x 4621 grey, the largest scan of the issue's mix
    vips replicate "$fx/eng.png" "$work/rep.v" 3 8
    vips crop "$work/rep.v" "$work/scan.jpg[Q=90]" 0 0 4110 4621
    rm -f "$work/rep.v"
fi
[ -f "$work/big30.pdf" ] || python3 bench/bigpdf.py "$work/big30.pdf" 30
# The options given (set -- below takes "$@" for each page's own).
opts=("$@")
echo "# engine ${ENGINE:-lstm} unless the options name another; options: ${opts[*]}"
printf '%-28s %11s %11s %8s %8s %10s %8s\n' page "size" "to engine" "peak MB" "zyg MB" "bytes/px" "s"
for spec in "a4.png" "a4.jpg" "scan.jpg" "big30.pdf" "big30.pdf --max-image-size 0"; do
    set -- $spec
    f=$work/$1
    shift
    rm -rf "$work/out"
    "$OCRPOOL" ocr --engine "${ENGINE:-lstm}" "${opts[@]}" --log-level info -j 1 "$@" -o "$work/out" "$f" 2>"$work/log" >/dev/null ||
        { echo "$f: ocr failed"; tail -3 "$work/log"; continue; }
    python3 - "$f" "$work/log" "$spec" "$@" <<'PY'
import re, subprocess, sys
f, log, spec = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3]
max_side = 2048
if "--max-image-size" in sys.argv[4:]:
    max_side = int(sys.argv[sys.argv.index("--max-image-size") + 1])
zyg = int(re.search(r"zygote ready: .* RSS (\d+) KiB", log).group(1))
m = re.search(r"done by worker \d+ in ([\d.]+) s, peak RSS (\d+) KiB", log)
secs, peak = float(m.group(1)), int(m.group(2))
w, h = (int(v) for v in subprocess.check_output(
    ["vipsheader", "-f", "width", f]).split() + subprocess.check_output(
    ["vipsheader", "-f", "height", f]).split())
if f.endswith(".pdf"):  # vipsheader renders at 72 dpi; the node at pdf-dpi 200
    w, h = round(w * 200 / 72), round(h * 200 / 72)
longest = max(w, h)
k = max_side / longest if max_side and longest > max_side else 1.0
nw, nh = round(w * k), round(h * k)
print("%-28s %11s %11s %8.1f %8.1f %10.1f %8.2f" % (
    spec, "%dx%d" % (w, h), "%dx%d" % (nw, nh), peak / 1024, zyg / 1024,
    (peak - zyg) * 1024 / (nw * nh), secs))
PY
done
