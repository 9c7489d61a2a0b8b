#!/usr/bin/env bash
# Runs ocrpool's GPU checks on a machine with an NVIDIA GPU (the lent
# device machine), from the kit scripts/make-devkit.sh made here: nothing is
# built there. Its whole output goes to $OUT/log.txt (default
# ./gpu-check-out) and the detail files into $OUT/gpu-check.tar.gz (the
# device tool brings back at most 8 files). About 8 minutes:
#   1. the CUDA forward pass (issue 17): test_cuda on the GPU, then parity
#      with the CPU on the bench lines of eng, san, tam and hin, then lines/s
#      CPU vs GPU at batch sizes 1 to 256, then the GPU memory held under
#      each cap, with and without allow growth;
#   2. pages/s through the recognizer (issues 16 and 17): san+eng pages at
#      -c 1, 8, 16 with the GPU and with the CPU only, and the recognizer's GPU
#      memory at -c 2 and -c 16 under each preset (about 3 to 5 minutes);
#   3. discovery and monitoring (gpus, gpu-test, monitor) as before.
# Where the device tool runs it (carry build/devkit):
#   OUT=$OUT scripts/gpu-device-check.sh
# SECTIONS="1 3" runs only those; NPAGES=N copies of each page in section 2 (24); CARRIED=1
# uses the carried libraries even where the machine's would do (to try the kit here; with
# OCRPOOL_CUDA_EMULATE=1024, section 2 runs on an emulated device).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
kit=$PWD/build/devkit
det=$(mktemp -d)
exec > >(tee "$OUT/log.txt") 2>&1
trap 'tar -C "$det" -czf "$OUT/gpu-check.tar.gz" . ; echo "details in gpu-check.tar.gz"' EXIT
export OMP_THREAD_LIMIT=1 # set here: the loader below cannot re-execute ocrpool
[ -d "$kit/tessdata" ] || tar -C "$kit" -xJf "$kit/tessdata.tar.xz"
export TESSDATA_PREFIX=$kit/tessdata
# The kit's programs run through the carried loader and libraries where the machine lacks
# some of theirs: "${LD[@]}" "$kit/PROGRAM" (a command, so that timeout can run it too).
LD=()
if [ -n "${CARRIED:-}" ] || ldd "$kit/ocrpool" 2>/dev/null | grep -q 'not found'; then
    [ -d "$kit/devlibs" ] || tar -C "$kit" -xJf "$kit/devlibs.tar.xz"
    LD=("$kit/devlibs/ld-linux-x86-64.so.2" --library-path "$kit/devlibs")
    echo "# using the carried libraries"
fi
run() { "${LD[@]}" "$kit/ocrpool" "$@"; }
T="--tessdata-dir $kit/tessdata -l eng --image $kit/eng.png"
section() { echo; echo "==== $* ($(date -u +%T))"; }
want() { [[ " ${SECTIONS:-1 2 3} " == *" $1 "* ]]; }

section "machine"
uname -a
nproc
nvidia-smi --query-gpu=index,name,memory.total,memory.used,uuid,pci.bus_id,driver_version --format=csv | tee "$det/nvidia-smi.csv"
run --version

# ---- 1. the CUDA forward pass (issue 17) -----------------------------------------------
# int8 tensor cores through cuBLASLt are not measured: libcublasLt is not in the CUDA
# toolkit as a static library and the device machine has only the driver, so the products
# are dp4a kernels (ours).
if want 1; then
    section "1a. test_cuda on the GPU (the device cases must pass, not skip)"
    timeout 300 "${LD[@]}" "$kit/test_cuda" 2>&1 | tee "$det/test_cuda.txt"
    for l in eng san tam hin; do
        section "1b. parity with the CPU: $l"
        timeout 300 "${LD[@]}" "$kit/lstm_cuda" parity "$kit/tessdata/$l.traineddata" "$kit/lines/$l"/*.png |
            tee "$det/parity-$l.txt"
    done
    for l in eng san; do
        section "1c. lines/s, CPU vs GPU: $l"
        LSTM_CUDA_SECONDS=1 timeout 300 "${LD[@]}" "$kit/lstm_cuda" speed "$kit/tessdata/$l.traineddata" \
            "$kit/lines/$l"/*.png | tee "$det/speed-$l.txt"
    done
    section "1d. GPU memory under each cap: eng"
    timeout 300 "${LD[@]}" "$kit/lstm_cuda" memory "$kit/tessdata/eng.traineddata" "$kit/lines/eng"/*.png |
        tee "$det/memory-eng.txt"
    nvidia-smi --query-gpu=memory.used --format=csv
fi

# ---- 2. pages/s through the recognizer (issues 16 and 17) --------------------------------
# The pages: eng.png and san.png, 24 copies each (each a distinct file, so no result is
# reused), read as san+eng. pages/s at -c 1, 8 and 16 with the GPU (`--device cuda:0`:
# recognizer auto = shared, on the GPU) and with the CPU only (`--device cpu`, recognizer
# worker: the CPU's own best), on the same box; the texts must be the same. Then at -c 16
# with recognizer-batch 64 (is a larger default worth it on a GPU?). Then the recognizer's
# GPU memory at -c 2 and -c 16 under each preset: its allocator's cap and peak (the master
# logs them when it ends) and NVML's per-process figure (context included), sampled every
# 0.5 s. About 3 to 5 minutes on 16 cores.
if want 2; then
    section "2. pages/s through the recognizer"
    pages=$det/pages
    mkdir -p "$pages"
    for i in $(seq -w 1 "${NPAGES:-24}"); do
        cp "$kit/eng.png" "$pages/eng-$i.png"
        cp "$kit/san.png" "$pages/san-$i.png"
    done
    np=$(ls "$pages" | wc -l)
    # ocr_run NAME ARGS...: one run over the pages, its text in $det/text-NAME.txt, its log
    # in $det/ocr-NAME.log; prints its pages/s.
    ocr_run() {
        local name=$1 t0 t1
        shift
        t0=$(date +%s.%N)
        timeout 240 "${LD[@]}" "$kit/ocrpool" ocr --engine lstm --tessdata-dir "$kit/tessdata" -l san+eng \
            --log-level info --sidecar "$det/text-$name.txt" "$@" "$pages"/*.png >/dev/null 2>"$det/ocr-$name.log"
        t1=$(date +%s.%N)
        awk -v n="$np" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", n / (b - a) }'
    }
    for c in 1 8 16; do
        g=$(ocr_run "gpu-$c" -c "$c" --device cuda:0)
        p=$(ocr_run "cpu-$c" -c "$c" --device cpu --recognizer worker)
        same=$(cmp -s "$det/text-gpu-$c.txt" "$det/text-cpu-$c.txt" && echo same || echo DIFFERENT)
        onthegpu=$(grep -c 'recognizer 0 on GPU' "$det/ocr-gpu-$c.log")
        echo "pages/s at -c $c ($np pages, san+eng): GPU $g, CPU only $p; text $same; recognizer on the GPU: $onthegpu"
        grep -h 'recognizer 0 ends\|recognizer 0 GPU\|read on the CPU' "$det/ocr-gpu-$c.log" | sed 's/^[^ ]* [0-9]* M /    /'
    done
    g=$(ocr_run gpu-16-b64 -c 16 --device cuda:0 --recognizer-batch 64)
    echo "pages/s at -c 16, recognizer-batch 64: GPU $g"
    grep -h 'recognizer 0 ends' "$det/ocr-gpu-16-b64.log" | sed 's/^[^ ]* [0-9]* M /    /'
    for preset in conservative balanced performance; do
        for c in 2 16; do
            name=mem-$preset-$c
            ocr_run "$name" -c "$c" --device cuda:0 --preset "$preset" >"$det/$name.pps" &
            job=$!
            peak=0
            while kill -0 "$job" 2>/dev/null; do
                run gpus --json >"$det/$name.gpus.json" 2>/dev/null
                b=$(grep -o '"used_bytes": *[0-9]*' "$det/$name.gpus.json" | grep -o '[0-9]*$' | sort -n | tail -1)
                [ -n "$b" ] && [ "$b" -gt "$peak" ] && peak=$b
                sleep 0.5
            done
            wait "$job"
            fig=$(grep -o 'recognizer 0 GPU .*' "$det/ocr-$name.log" | head -1)
            echo "recognizer GPU memory, preset $preset, -c $c: NVML peak $((peak >> 20)) MiB (context included); $fig; $(cat "$det/$name.pps") pages/s"
        done
    done
fi

# ---- 3. discovery and monitoring --------------------------------------------------------
want 3 || exit 0
section "3. gpus, gpu-test, monitor"
set -x
run gpus | tee "$det/gpus.txt"
run gpus --json | tee "$det/gpus.json"
# A process holding 1 GiB: gpus must list it with its memory.
"$kit/cuda_hold" 1024 6 >"$det/hold.pid" &
hold=$!
sleep 3
run gpus --json | tee "$det/gpus-with-process.json"
echo "holder pid $(cat "$det/hold.pid")"
wait $hold
run gpu-test -c 2 $T | tee "$det/gpu-test-default.txt"
run gpu-test -c 4 --device cuda:0 --preset conservative $T | tee "$det/gpu-test-cuda0-conservative.txt"
run gpu-test -c 2 --device cuda:0 --memory-fraction 0.25 $T | tee "$det/gpu-test-fraction.txt"
run gpu-test -c 1 --device cuda:1 $T | tee "$det/gpu-test-cuda1.txt"
run ocr --device cuda:3 --tessdata-dir "$kit/tessdata" -l eng "$kit/eng.png"; echo "exit $?"
run ocr --device cuda:0 --tessdata-dir "$kit/tessdata" -l eng "$kit/eng.png" | tee "$det/ocr.txt"
# A node on this machine: monitor shows the GPU beside the workers.
export XDG_RUNTIME_DIR=$det/run
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
run worker --broker "sqlite://$det/q.db" -c 2 --tessdata-dir "$kit/tessdata" -l eng >"$det/worker.log" 2>&1 &
sleep 2
run submit --broker "sqlite://$det/q.db" --tessdata-dir "$kit/tessdata" -l eng "$kit/eng.png"
sleep 2
run monitor | tee "$det/monitor.txt"
run monitor --json >"$det/monitor.json"
run stop | tee "$det/stop.txt"
