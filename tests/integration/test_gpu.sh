#!/usr/bin/env bash
# `ocrpool gpus` and `ocrpool gpu-test` as they run on this machine: with no
# NVIDIA driver (CI, developers' machines) and, where there is one, with it.
# Nothing here needs a GPU.
source "$(dirname "$0")/lib.sh"

"$OCRPOOL" gpus >"$TMP/gpus.txt" 2>&1
rc=$?
check "gpus: exit 0 (got $rc)" test $rc -eq 0
"$OCRPOOL" gpus --json >"$TMP/gpus.json"
check "gpus --json: parses" python3 -c "import json; json.load(open('$TMP/gpus.json'))"
n=$(python3 -c "import json; print(len(json.load(open('$TMP/gpus.json'))['gpus']))")
if [ "$n" -eq 0 ]; then
    check "gpus without a driver: one line saying so" \
        bash -c "[ \$(wc -l <'$TMP/gpus.txt') -eq 1 ] && grep -qx 'no NVIDIA GPU found (NVML not available)' '$TMP/gpus.txt'"
    check "gpus --json without a driver: empty list and the reason" \
        python3 -c "import json; d=json.load(open('$TMP/gpus.json')); assert d['gpus'] == [] and d['error'] == 'NVML not available'"
else
    echo "# $n GPU(s) here"
    check "gpus --json: every device has a name, a UUID and memory" python3 -c "
import json; d = json.load(open('$TMP/gpus.json'))
assert d['driver']
for g in d['gpus']:
    assert g['name'] and g['uuid'].startswith('GPU-') and g['memory_total_mib'] > 0, g"
    if command -v nvidia-smi >/dev/null; then
        check "gpus --json: name and memory as nvidia-smi says" python3 -c "
import json, subprocess
d = json.load(open('$TMP/gpus.json'))
smi = subprocess.run(['nvidia-smi', '--query-gpu=index,name,memory.total', '--format=csv,noheader,nounits'], capture_output=True, text=True, check=True).stdout
for line, g in zip(smi.strip().splitlines(), d['gpus']):
    i, name, mem = [x.strip() for x in line.split(',')]
    assert (int(i), name, int(mem)) == (g['index'], g['name'], g['memory_total_mib']), (line, g)"
    fi
fi

# gpu-test with the Tesseract engine (no GPU path; the default engine, lstm, has one and is
# checked in test_gpu_recognizer.sh): it resolves to the CPU, each worker OCRs the page.
# (AddressSanitizer's shadow memory puts any worker over 200000 KiB: no limit there.)
rsslimit=()
[ -z "${OCP_ASAN:-}" ] || rsslimit=(--max-memory-per-child 0)
"$OCRPOOL" gpu-test --engine tesseract -c 2 "${rsslimit[@]}" >"$TMP/gt.txt" 2>&1
rc=$?
cat "$TMP/gt.txt" | sed 's/^/# /'
check "gpu-test: exit 0 (got $rc)" test $rc -eq 0
check "gpu-test: says why it runs on the CPU" grep -q 'resolved    cpu: engine tesseract has no GPU path' "$TMP/gt.txt"
check "gpu-test: both workers OCRed the sample" test "$(grep -c '^\[PASS\] worker [12]: engine loaded in .* page OCRed in' "$TMP/gt.txt")" -eq 2
check "gpu-test: peak RSS checked per worker" test "$(grep -c '^\[PASS\] worker [12]: peak RSS' "$TMP/gt.txt")" -eq 2
check "gpu-test: result line" grep -q '^result: PASS' "$TMP/gt.txt"

# A given page instead of the sample; a preset and a fraction are shown as resolved.
"$OCRPOOL" gpu-test --engine tesseract -c 1 "${rsslimit[@]}" --preset conservative --image "$FIXTURES/tam.png" -l tam >"$TMP/gt2.txt" 2>&1
rc=$?
check "gpu-test --image: exit 0 (got $rc)" test $rc -eq 0
check "gpu-test --preset conservative: shown" grep -q 'memory      fraction 0.5, max 4096 MB, allow growth false' "$TMP/gt2.txt"
"$OCRPOOL" gpu-test -c 1 --memory-fraction 0.3 >"$TMP/gt3.txt" 2>&1
check "gpu-test --memory-fraction" grep -q 'fraction 0.3,' "$TMP/gt3.txt"

# A device that is not there: a FAIL naming what was found, exit 1.
"$OCRPOOL" gpu-test --device cuda:63 >"$TMP/gt4.txt" 2>&1
rc=$?
check "gpu-test --device cuda:63: exit 1 (got $rc)" test $rc -eq 1
check "gpu-test --device cuda:63: FAIL with the devices found" \
    grep -Eq '^\[FAIL\] settings valid for the devices present: device cuda:63 is not present: (found [0-9]+:|no NVIDIA GPU found)' "$TMP/gt4.txt"
# The same for ocr: a usage error before any page.
"$OCRPOOL" ocr --device cuda:63 "$FIXTURES/eng.png" >/dev/null 2>"$TMP/ocr.err"
rc=$?
check "ocr --device cuda:63: exit 2 (got $rc)" test $rc -eq 2
check "ocr --device cuda:63: one line" grep -q "^ocrpool: setting device: 'cuda:63' from flag --device: device cuda:63 is not present" "$TMP/ocr.err"
check "ocr --device cpu: runs" bash -c "'$OCRPOOL' ocr --device cpu -l eng '$FIXTURES/eng.png' | grep >/dev/null 'quick brown fox'"
finish
