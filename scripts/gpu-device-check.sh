#!/usr/bin/env bash
# Runs ocrpool's GPU checks on a machine with an NVIDIA GPU (the lent
# device machine), from the kit scripts/make-devkit.sh made here: nothing is
# built there. Its whole output goes to $OUT/log.txt (default
# ./gpu-check-out) and the detail files into $OUT/gpu-check.tar.gz (the
# device tool brings back at most 8 files). About 4 minutes:
#   1. the CUDA forward pass (issue 17): test_cuda on the GPU, then parity
#      with the CPU on the bench lines of eng, san, tam and hin, then lines/s
#      CPU vs GPU at batch sizes 1 to 256, then the GPU memory held under
#      each cap, with and without allow growth;
#   2. pages/s through the recognizer (issues 16 and 17): runs once
#      `ocrpool worker --help` lists --recognizer (until then it says so);
#   3. discovery and monitoring (gpus, gpu-test, monitor) as before.
# Where the device tool runs it (carry build/devkit):
#   OUT=$OUT scripts/gpu-device-check.sh
# SECTIONS="1 3" runs only those; CARRIED=1 uses the carried libraries even where the
# machine's would do (to try the kit here).
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
# RECOGNIZER: the pages/s runs need the shared recognizer (issue 16) with its CUDA backend
# (this issue): `--recognizer shared --device cuda:0`. They run once the binary has the
# setting. The pages: eng.png and san.png, 32 copies each (each a distinct file, so no
# result is reused), read as san+eng; -c 1, 8, 16 on the GPU and on the CPU only; the text
# must be the same; then the recognizer's GPU memory (NVML, per process) at -c 2 and -c 16
# under each preset.
if want 2; then
    section "2. pages/s through the recognizer"
    if run worker --help 2>&1 | grep -q -- '--recognizer'; then
        pages=$det/pages
        mkdir -p "$pages"
        for i in $(seq -w 1 32); do
            cp "$kit/eng.png" "$pages/eng-$i.png"
            cp "$kit/san.png" "$pages/san-$i.png"
        done
        pps() { # pps DEVICE C: pages/s of one run, its text into $det/text-DEVICE-C.txt
            local dev=$1 c=$2 t0 t1
            t0=$(date +%s.%N)
            run ocr -c "$c" --engine lstm --recognizer shared --device "$dev" \
                --tessdata-dir "$kit/tessdata" -l san+eng --sidecar "$det/text-$dev-$c.txt" \
                "$pages"/*.png >/dev/null 2>"$det/ocr-$dev-$c.err"
            t1=$(date +%s.%N)
            awk -v n="$(ls "$pages" | wc -l)" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", n / (b - a) }'
        }
        for c in 1 8 16; do
            g=$(pps cuda:0 "$c")
            p=$(pps cpu "$c")
            same=$(cmp -s "$det/text-cuda:0-$c.txt" "$det/text-cpu-$c.txt" && echo same || echo DIFFERENT)
            echo "pages/s at -c $c: GPU $g, CPU only $p, text $same"
        done
        for preset in conservative balanced performance; do
            for c in 2 16; do
                export XDG_RUNTIME_DIR=$det/run-$preset-$c
                mkdir -p -m 700 "$XDG_RUNTIME_DIR"
                run ocr -c "$c" --engine lstm --recognizer shared --device cuda:0 --preset "$preset" \
                    --tessdata-dir "$kit/tessdata" -l san+eng -o "$det/out-$preset-$c" \
                    "$pages"/*.png >/dev/null 2>&1 &
                job=$!
                sleep 8
                run gpus --json >"$det/gpus-$preset-$c.json"
                wait "$job"
                echo "recognizer GPU memory, $preset, -c $c: $(grep -o '"used_bytes": *[0-9]*' "$det/gpus-$preset-$c.json" | tr '\n' ' ')"
            done
        done
        unset XDG_RUNTIME_DIR
    else
        echo "skipped: this ocrpool has no shared recognizer yet (no --recognizer)"
    fi
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
