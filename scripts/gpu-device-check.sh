#!/usr/bin/env bash
# Runs ocrpool's GPU checks on a machine with an NVIDIA GPU (the lent
# device machine), from the kit scripts/make-devkit.sh made. Writes every
# output under $OUT (default ./gpu-check-out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
kit=$PWD/build/devkit
exec > >(tee "$OUT/log.txt") 2>&1
export OMP_THREAD_LIMIT=1 # set here: the loader below cannot re-execute ocrpool
if ldd "$kit/ocrpool" 2>/dev/null | grep -q 'not found'; then
    tar -C "$kit" -xJf "$kit/devlibs.tar.xz"
    run() { "$kit/devlibs/ld-linux-x86-64.so.2" --library-path "$kit/devlibs" "$kit/ocrpool" "$@"; }
    echo "# using the carried libraries"
else
    run() { "$kit/ocrpool" "$@"; }
fi
T="--tessdata-dir $kit/tessdata -l eng --image $kit/eng.png"
set -x
uname -a
nvidia-smi --query-gpu=index,name,memory.total,memory.used,uuid,pci.bus_id,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
run gpus | tee "$OUT/gpus.txt"
run gpus --json | tee "$OUT/gpus.json"
# A process holding 1 GiB: gpus must list it with its memory.
"$kit/cuda_hold" 1024 6 >"$OUT/hold.pid" &
hold=$!
sleep 3
run gpus --json | tee "$OUT/gpus-with-process.json"
echo "holder pid $(cat "$OUT/hold.pid")"
wait $hold
run gpu-test -c 2 $T | tee "$OUT/gpu-test-default.txt"
run gpu-test -c 4 --device cuda:0 --preset conservative $T | tee "$OUT/gpu-test-cuda0-conservative.txt"
run gpu-test -c 2 --device cuda:0 --memory-fraction 0.25 $T | tee "$OUT/gpu-test-fraction.txt"
run gpu-test -c 1 --device cuda:1 $T | tee "$OUT/gpu-test-cuda1.txt"
run ocr --device cuda:3 --tessdata-dir "$kit/tessdata" -l eng "$kit/eng.png"; echo "exit $?"
run ocr --device cuda:0 --tessdata-dir "$kit/tessdata" -l eng "$kit/eng.png" | tee "$OUT/ocr.txt"
# A node on this machine: monitor shows the GPU beside the workers.
export XDG_RUNTIME_DIR=$OUT/run
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
run worker --broker "sqlite://$OUT/q.db" -c 2 --tessdata-dir "$kit/tessdata" -l eng >"$OUT/worker.log" 2>&1 &
sleep 2
run submit --broker "sqlite://$OUT/q.db" --tessdata-dir "$kit/tessdata" -l eng "$kit/eng.png"
sleep 2
run monitor | tee "$OUT/monitor.txt"
run monitor --json >"$OUT/monitor.json"
run stop | tee "$OUT/stop.txt"
