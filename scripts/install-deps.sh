#!/usr/bin/env bash
# Installs what ocrpool needs to build, run and test, from Debian's
# packages. Idempotent, and quiet when everything is there already.
# Runs apt as root (directly, or through sudo when not root).
set -euo pipefail

pkgs=(
    # build
    build-essential pkg-config
    libtesseract-dev libleptonica-dev libvips-dev libjansson-dev libcmocka-dev libsqlite3-dev libmicrohttpd-dev
    libhiredis-dev libqpdf-dev
    # OCR engine and language data: English, Sanskrit, Tamil, Hindi, scripts, orientation
    tesseract-ocr tesseract-ocr-eng tesseract-ocr-san tesseract-ocr-tam tesseract-ocr-hin
    tesseract-ocr-script-deva tesseract-ocr-script-taml tesseract-ocr-osd
    # test fixtures and tools: Noto and URW (Nimbus Mono) fonts, pango-view, vips CLI, pdfunite, qpdf --check, /usr/bin/time
    fonts-noto-core fonts-urw-base35 pango1.0-tools libvips-tools poppler-utils qpdf time python3
    # the dashboard test: a real browser
    chromium
    # several machines: a real Redis and the Python Celery client, for the tests and make bench
    redis-server redis-tools python3-celery python3-redis python3-tesserocr python3-pil
    # test_celery_tools: the virtualenv of the current Celery and Flower (from PyPI)
    python3-venv
    # make bench's parity run: real Hindi, Tamil and Marathi text from message catalogues
    gettext iso-codes
    # make fuzz: libFuzzer harnesses (fuzz/) under clang's sanitizers
    clang-14 libfuzzer-14-dev
)

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
        sudo=(sudo)
    else
        echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
# In a container or chroot (no init system), a package's service is not started: the tests
# start their own redis-server on a port of their own.
if [ ! -d /run/systemd/system ] && [ ! -e /usr/sbin/policy-rc.d ]; then
    export RUNLEVEL=1
fi
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
echo "install-deps: done"
