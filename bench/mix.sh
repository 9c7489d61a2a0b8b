#!/usr/bin/env bash
# Issue 18's benchmark, of the same kind as its 38-page mix, in one run (not part of
# `make test`): 20 synthetic A4 300 dpi pages (san, tam, eng) and 18 SYNTHETIC STAND-INS
# FOR REAL BOOK AND DOCUMENT SCANS. No real scan is on this machine and nothing is
# downloaded: the 18 are rendered text degraded as a scanner would degrade it (grey,
# uneven illumination, grain, blur, skew up to 1 degree, JPEG for some, two columns on 2),
# 0.3 to 19 megapixels (the largest 4110 x 4621 grey), in eng, san, tam, san+eng and
# tam+eng (bench/mix_pages.py, made once under BUILD/bench/mix/). Figures on them are not
# figures on real scans.
# Each page is read in its own languages, in one shared order, by
#   the tesseract CLI (xargs -P2, OMP_THREAD_LIMIT=1, full size),
#   the reference Python Celery worker (bench/celery_ref.py, -c 2, on its own redis-server),
#   `ocrpool worker -c 2` (default engine, lstm; on its own redis-server),
# the two workers fed by the same plain Celery client; memory is the whole process tree's
# PSS, Redis included. Prints the table (pages/s, peak total PSS, 1 - CER, per language),
# ocrpool's ratios to each peer and the issue's goals, met or not (bench/mix_run.py).
#   bench/mix.sh        (BUILD=build by default; a few minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
work=$PWD/$BUILD/bench/mix
mkdir -p "$work"
export PYTHONDONTWRITEBYTECODE=1  # no bench/__pycache__ from the imports
/usr/bin/python3 bench/mix_pages.py "$work"
rm -rf "$work/out"
OCRPOOL=$PWD/$BUILD/ocrpool /usr/bin/python3 bench/mix_run.py "$work"
