#!/usr/bin/env bash
# Packs what scripts/gpu-device-check.sh needs on a lent GPU machine, where
# nothing can be installed and nothing is built: build/ocrpool (with CUDA),
# the CUDA forward pass's tool and unit test (build/tools/lstm_cuda,
# build/tests/test_cuda), the shared libraries they load (with the dynamic
# loader, so the machine's own libc does not matter; the CUDA runtime is
# linked in statically, the driver is the machine's), the eng, san, tam and
# hin models, the parity bench's lines (rendered here as bench/lstm_parity.sh
# renders them: KIT_LINES a language, 40 by default), test pages, and a small
# CUDA program that holds GPU memory (to check NVML's per-process figures).
# Into build/devkit (carry it to the device machine: about 50 MB of the 64 MiB that may
# travel).
#   make -j2 all unit-bins && scripts/make-devkit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
kit=build/devkit
N=${KIT_LINES:-40}
TD=${TESSDATA_PREFIX:-/usr/share/tesseract-ocr/5/tessdata}
bins=(build/ocrpool build/tools/lstm_cuda build/tests/test_cuda)
for b in "${bins[@]}"; do
    [ -x "$b" ] || { echo "make-devkit: $b is missing (make all unit-bins)" >&2; exit 1; }
done
if ! build/ocrpool --version | grep -q 'CUDA .* support built'; then
    echo "make-devkit: build/ocrpool is built without CUDA ($(build/ocrpool --version))" >&2
    exit 1
fi
rm -rf "$kit"
mkdir -p "$kit/devlibs" "$kit/tessdata" "$kit/lines"
cp "${bins[@]}" "$kit/"
for b in "${bins[@]}"; do
    ldd "$b" | awk '/=>/ {print $3} /ld-linux/ {print $1}'
done | sort -u | xargs -I{} cp -L {} "$kit/devlibs/"
tar -C "$kit" -cJf "$kit/devlibs.tar.xz" devlibs
rm -rf "$kit/devlibs"
# The models, compressed (the kit travels under 64 MiB): unpacked by the check script.
for l in eng san tam hin; do
    cp "$TD/$l.traineddata" "$kit/tessdata/"
done
tar -C "$kit" -cf - tessdata | xz -T2 -9 >"$kit/tessdata.tar.xz"
rm -rf "$kit/tessdata"
[ -f build/fixtures/eng.png ] || tests/data/make-fixtures.sh build/fixtures
cp build/fixtures/eng.png build/fixtures/san.png "$kit/"

# The parity bench's lines: real text (bench/texts.sh), rendered, cropped to its ink, scaled
# to the model's height in black and white (bench/lstm_parity.sh's `one`).
source bench/texts.sh
source tools/fonts.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bench_texts "$work" "$N"
render_line() { # render_line LANG TEXT OUT.png
    local l=$1 text=$2 out=$3 d h=36
    [ "$l" = hin ] && h=48
    d=$(mktemp -d -p "$work")
    pango-view --font="$(font_of "$l")" --dpi=300 --margin=8 --background=white \
        --foreground=black -q -o "$d/r.png" --text "$text" 2>/dev/null || return 0
    vips colourspace "$d/r.png" "$d/g0.v" b-w
    read -r left top width height < <(vips find_trim "$d/g0.v" --background 255 | tr '\n' ' ')
    [ "${height:-0}" -gt 4 ] || return 0
    vips crop "$d/g0.v" "$d/g.v" "$left" "$top" "$width" "$height"
    vips resize "$d/g.v" "$d/s.v" "$(awk "BEGIN { print $h / $height }")" --kernel lanczos3
    vips relational_const "$d/s.v" "$d/t.v" more 128
    vips cast "$d/t.v" "$out" uchar
    rm -rf "$d"
}
export -f render_line font_of
export work
for l in eng san tam hin; do
    mkdir -p "$kit/lines/$l"
    nl -w3 -nrz -s$'\t' "$work/$l.txt" | while IFS=$'\t' read -r i t; do
        printf '%s\0%s\0%s\0' "$l" "$t" "$kit/lines/$l/$i.png"
    done | xargs -0 -n3 -P2 bash -c 'render_line "$0" "$1" "$2"'
    echo "make-devkit: $(ls "$kit/lines/$l" | wc -l) $l lines"
done

cat >"$kit/cuda_hold.cu" <<'CU'
// Holds N MiB of GPU memory for S seconds, so NVML lists this process.
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 1024;
    int secs = argc > 2 ? atoi(argv[2]) : 5;
    void *p = NULL;
    if (cudaMalloc(&p, mib << 20) != cudaSuccess || cudaMemset(p, 0, mib << 20) != cudaSuccess) {
        fprintf(stderr, "cuda_hold: allocation failed\n");
        return 1;
    }
    cudaDeviceSynchronize();
    printf("%d\n", (int)getpid());
    fflush(stdout);
    sleep(secs);
    cudaFree(p);
    return 0;
}
CU
/usr/local/cuda/bin/nvcc -O2 -o "$kit/cuda_hold" "$kit/cuda_hold.cu"
du -sh "$kit"
