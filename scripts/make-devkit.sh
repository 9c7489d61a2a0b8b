#!/usr/bin/env bash
# Packs what scripts/gpu-device-check.sh needs on a lent GPU machine, where
# nothing can be installed: build/ocrpool, the shared libraries it loads
# (with the dynamic loader, so the machine's own libc does not matter),
# English language data, a test page, and a small CUDA program that holds
# GPU memory (to check NVML's per-process figures). Into build/devkit.
set -euo pipefail
cd "$(dirname "$0")/.."
kit=build/devkit
rm -rf "$kit"
mkdir -p "$kit/devlibs" "$kit/tessdata"
cp build/ocrpool "$kit/"
ldd build/ocrpool | awk '/=>/ {print $3} /ld-linux/ {print $1}' | xargs -I{} cp -L {} "$kit/devlibs/"
tar -C "$kit" -cJf "$kit/devlibs.tar.xz" devlibs
rm -rf "$kit/devlibs"
cp /usr/share/tesseract-ocr/5/tessdata/eng.traineddata "$kit/tessdata/"
cp build/fixtures/eng.png "$kit/"
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
