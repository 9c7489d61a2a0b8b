#!/usr/bin/env bash
# The shared recognizer on a GPU (issue 17; README "Shared recognizer on a GPU"), run here on
# emulated devices: OCRPOOL_CUDA_EMULATE=MIB[,MIB...] lists devices of that size instead of
# NVML's, and a recognizer given one opens an emulated CUDA context (the CUDA path's kernel
# bodies and allocator, on the CPU: gpu/cuda/cuda_forward.h). What a real GPU adds (launches,
# the driver) is checked by scripts/gpu-device-check.sh on the GPU machine.
#  1. text and TSV identical to the CPU's recognizer (and to the workers'), per installed
#     language, the GPU's recognizer having read the lines;
#  2. the cap = min(gpu-memory-fraction x total, gpu-max-memory-mb): the allocator's figures
#     never above it at -c 2 and -c 4; without growth it is held from the start and the
#     same at both; with growth less is held at the start; a cap too small for a batch
#     splits it and the text is still right;
#  3. the presets: what each resolves to, and the cap it gives the recognizer;
#  4. a device lost mid-run: its batch is read again on the CPU, the GPU given up, logged
#     and counted, every text right;
#  5. CUDA not usable (here: no driver, a real context asked for on a listed device): the
#     binary starts, says so in one clear line, and reads on the CPU;
#  6. two devices (cuda:0,cuda:1 and auto): one recognizer each, both get lines;
#  7. the GPU's figures in `status --json`, /metrics and `monitor`.
source "$(dirname "$0")/lib.sh"
F=$FIXTURES
TD=${TESSDATA_PREFIX:-/usr/share/tesseract-ocr/5/tessdata}
export OMP_THREAD_LIMIT=1
if ! "$OCRPOOL" --version | grep >/dev/null 'CUDA .* support built'; then
    skip "this ocrpool was built without CUDA (no nvcc, or make CUDA=0): no emulated context"
    finish
fi
langs=()
for l in eng san; do
    [ -f "$TD/$l.traineddata" ] && langs+=("$l")
done
if [ ${#langs[@]} -eq 0 ]; then
    skip "no test language installed in $TD"
    finish
fi
echo "# languages: ${langs[*]}"
export OCRPOOL_CUDA_EMULATE=1024

ocr() { "$OCRPOOL" ocr --engine lstm --format txt,tsv "$@"; }
same_dirs() { diff -r -x '.ocrpool-queue.db*' "$1" "$2" >"$TMP/diff.txt"; }
# lines_read LOG INDEX: the lines recognizer INDEX said it read when it ended.
lines_read() { grep -o "recognizer $2 ends: [0-9]* lines" "$1" | awk '{s += $4} END {print s + 0}'; }
# gpu_fig LOG FIELD: a figure of recognizer 0's GPU line at its end ("cap", "peak held", ...).
gpu_fig() { grep -o "recognizer 0 GPU .*" "$1" | grep -o "$2 [0-9]*" | awk '{print $NF}' | tail -1; }

# --- 1. The same text as the CPU -----------------------------------------------------------
for l in "${langs[@]}"; do
    in=("$F/$l.png" "$F/$l.rgb.png" "$F/$l.pdf")
    ocr -l "$l" -j 2 --device cpu --recognizer shared -o "$TMP/c-$l" "${in[@]}" 2>/dev/null
    ocr -l "$l" -j 2 --recognizer worker -o "$TMP/w-$l" "${in[@]}" 2>/dev/null
    ocr -l "$l" -j 2 --device cuda:0 --log-level info -o "$TMP/g-$l" "${in[@]}" 2>"$TMP/g-$l.log"
    n=$(lines_read "$TMP/g-$l.log" 0)
    ok=0
    grep -q 'recognizer 0 on GPU EMU-0' "$TMP/g-$l.log" && grep -q 'ready on .*(cuda,' "$TMP/g-$l.log" &&
        same_dirs "$TMP/c-$l" "$TMP/g-$l" && same_dirs "$TMP/w-$l" "$TMP/g-$l" && [ "$n" -gt 0 ] &&
        ! grep -q 'read in this worker\|read on the CPU' "$TMP/g-$l.log" && ok=1
    check "$l: device cuda:0 (recognizer auto = shared, on the GPU) gives the CPU's text and TSV ($n lines on the GPU)" \
        test $ok = 1
    [ $ok = 1 ] || { grep -E 'recogni|GPU|warn|error' "$TMP/g-$l.log" | tail -8 | sed 's/^/# /'; head -5 "$TMP/diff.txt" | sed 's/^/# /'; }
done
if [ -f "$TD/san.traineddata" ] && [ -f "$TD/eng.traineddata" ]; then
    ocr -l san+eng -j 2 --recognizer worker -o "$TMP/wm" "$F/san.png" "$F/eng.png" 2>/dev/null
    ocr -l san+eng -j 2 --device cuda:0 --log-level info -o "$TMP/gm" "$F/san.png" "$F/eng.png" 2>"$TMP/gm.log"
    check "-l san+eng: the GPU's recognizer gives the workers' text ($(lines_read "$TMP/gm.log" 0) lines)" \
        bash -c "diff -r -x '.ocrpool-queue.db*' '$TMP/wm' '$TMP/gm' >/dev/null && [ $(lines_read "$TMP/gm.log" 0) -gt 0 ]"
fi

# --- 2. The cap ------------------------------------------------------------------------------
l=${langs[0]}
pages=("$F/$l.png" "$F/$l.rgb.png" "$F/$l.pdf" "$F/$l.png" "$F/$l.rgb.png" "$F/$l.pdf")
[ -f "$F/eng-scan.pdf" ] && [ "$l" = eng ] && pages+=("$F/eng-scan.pdf")
cap=$((16 << 20))
declare -A held
for g in false true; do
    for c in 2 4; do
        log=$TMP/cap-$g-$c.log
        ocr -l "$l" -j $c --device cuda:0 --gpu-max-memory-mb 16 --gpu-allow-growth=$g --log-level info \
            -o "$TMP/cap-$g-$c" "${pages[@]}" 2>"$log"
        ph=$(gpu_fig "$log" "peak held")
        pu=$(gpu_fig "$log" "peak in use")
        held[$g-$c]=$ph
        check "growth $g, -c $c: cap $(gpu_fig "$log" cap) = 16 MiB, peak held $ph, peak in use $pu: never above it, text right" \
            bash -c "[ '$(gpu_fig "$log" cap)' = $cap ] && [ -n '$ph' ] && [ '$ph' -le $cap ] && [ '$pu' -le '$ph' ] &&
                     diff -q '$TMP/cap-$g-$c/$l.txt' '$TMP/w-$l/$l.txt' >/dev/null"
    done
done
check "growth false: the cap is held from the start, and the same at -c 2 and -c 4 (${held[false-2]} and ${held[false-4]})" \
    bash -c "grep -q 'growth off, 16 MiB held' '$TMP/cap-false-2.log' && [ '${held[false-2]}' = $cap ] && [ '${held[false-4]}' = $cap ]"
start_held=$(grep -o 'growth on, [0-9]* MiB held' "$TMP/cap-true-2.log" | grep -o '[0-9]*' | head -1)
check "growth true: less than the cap held at the start (${start_held:-?} MiB)" \
    bash -c "[ -n '$start_held' ] && [ '$start_held' -lt 16 ]"
log=$TMP/split.log
ocr -l "$l" -j 4 --device cuda:0 --gpu-max-memory-mb 5 --log-level info -o "$TMP/split" "${pages[@]}" 2>"$log"
splits=$(grep -o '[0-9]* batches split' "$log" | awk '{print $1}' | tail -1)
check "a 5 MiB cap: batches split to fit (${splits:-?} split), peak held $(gpu_fig "$log" "peak held") <= 5 MiB, text right" \
    bash -c "[ '${splits:-0}' -gt 0 ] && [ '$(gpu_fig "$log" "peak held")' -le $((5 << 20)) ] &&
             diff -q '$TMP/split/$l.txt' '$TMP/w-$l/$l.txt' >/dev/null && ! grep -q 'read on the CPU' '$log'"

# --- 3. The presets --------------------------------------------------------------------------
# On a 1024 MiB device: conservative 0.5 x 1024 = 512 (under its 4096 MB), no growth;
# balanced 0.8 x 1024 = 819, growth; performance 1.0 x 1024 = 1024, growth.
for p in conservative:512:off balanced:819:on performance:1024:on; do
    IFS=: read -r name mib grow <<<"$p"
    log=$TMP/preset-$name.log
    ocr -l "$l" -j 2 --device cuda:0 --preset "$name" --log-level info -o "$TMP/preset-$name" "$F/$l.png" 2>"$log"
    check "preset $name: cap $mib MiB, growth $grow, text right" \
        bash -c "grep -q 'cap $mib MiB (.*), growth $grow' '$log' && diff -q '$TMP/preset-$name/$l.txt' '$TMP/w-$l/$l.txt' >/dev/null"
done
"$OCRPOOL" config show --engine lstm 2>&1 | grep -E '^(device|gpu-|preset)' >"$TMP/show.txt"
check "config show (engine lstm): no GPU setting 'accepted, not used'" \
    bash -c "[ -s '$TMP/show.txt' ] && ! grep -q 'not used' '$TMP/show.txt'"

# --- 4. A device lost mid-run ----------------------------------------------------------------
log=$TMP/lost.log
OCRPOOL_CUDA_FAULT=5 ocr -l "$l" -j 2 --device cuda:0 --log-level info -o "$TMP/lost" "${pages[@]}" 2>"$log"
check "a GPU lost mid-run: logged, its batch and the rest read on the CPU, every text right" \
    bash -c "grep -q 'GPU EMU-0: a batch of [0-9]* lines failed: GPU lost' '$log' &&
             grep -q 'read on the CPU from now on' '$log' && grep -q 'GPU EMU-0: given up.* 1 failed' '$log' &&
             [ $(lines_read "$log" 0) -gt 0 ] && diff -q '$TMP/lost/$l.txt' '$TMP/w-$l/$l.txt' >/dev/null"

# --- 5. CUDA not usable ----------------------------------------------------------------------
log=$TMP/nodrv.log
OCRPOOL_CUDA_REAL_CONTEXT=1 ocr -l "$l" -j 2 --device cuda:0 --log-level info -o "$TMP/nodrv" "$F/$l.png" "$F/$l.pdf" 2>"$log"
rc=$?
why=$(grep -o 'GPU EMU-0: CUDA not usable: [^:]*' "$log" | head -1)
check "CUDA not usable (a real context, no driver here): starts (status $rc), says so ('$why'), reads on the CPU, text right" \
    bash -c "[ $rc = 0 ] && [ -n '$why' ] && grep -q 'read on the CPU from now on' '$log' &&
             diff -q '$TMP/nodrv/$l.txt' '$TMP/w-$l/$l.txt' >/dev/null"

# --- 6. Two devices --------------------------------------------------------------------------
export OCRPOOL_CUDA_EMULATE=1024,1024
for dev in cuda:0,cuda:1 auto; do
    log=$TMP/two-$dev.log
    ocr -l "$l" -j 4 --device "$dev" --log-level info -o "$TMP/two-$dev" "${pages[@]}" "${pages[@]}" 2>"$log"
    a=$(lines_read "$log" 0)
    b=$(lines_read "$log" 1)
    check "device $dev: two recognizers, one per GPU, both read lines ($a and $b), text right" \
        bash -c "grep -q '2 recognizer(s)' '$log' && grep -q 'recognizer 1 on GPU EMU-1' '$log' &&
                 [ $a -gt 0 ] && [ $b -gt 0 ] && diff -q '$TMP/two-$dev/$l.txt' '$TMP/w-$l/$l.txt' >/dev/null"
done
export OCRPOOL_CUDA_EMULATE=1024

# --- 8. gpu-test: each preset through the recognizer's GPU backend ---------------------------
"$OCRPOOL" gpu-test --engine lstm -l "$l" -c 1 --image "$F/$l.pdf" >"$TMP/gt.txt" 2>&1
rc=$?
check "gpu-test (emulated device): exit 0 (got $rc), each preset's lines/s, pages/s and peak GPU memory within its cap" \
    bash -c "[ $rc = 0 ] && [ \$(grep -c '^\[PASS\] preset [a-z]*: [0-9]* pages, [1-9][0-9]* lines on the GPU in .* lines/s, .* pages/s' '$TMP/gt.txt') = 3 ] &&
             grep -q '^\[PASS\] preset conservative: peak GPU memory 512.0 MiB within its cap of 512.0 MiB' '$TMP/gt.txt' &&
             [ \$(grep -c '^\[PASS\] preset [a-z]*: peak GPU memory' '$TMP/gt.txt') = 3 ]"
OCRPOOL_CUDA_EMULATE= "$OCRPOOL" gpu-test --engine lstm -l "$l" -c 1 >"$TMP/gt0.txt" 2>&1
rc=$?
check "gpu-test with no GPU: says so and exits 3 (got $rc)" \
    bash -c "[ $rc = 3 ] && grep -q '^\[ -- \] presets: no GPU to measure them on' '$TMP/gt0.txt'"

# --- 7. Monitoring: status, /metrics, monitor, the dashboard ----------------------------------
port=$(freeport)
Q="sqlite://$TMP/q.db"
mkdir -p "$TMP/in"
for i in 1 2 3; do for f in "$F/$l.png" "$F/$l.pdf"; do cp "$f" "$TMP/in/$i-$(basename "$f")"; done; done
"$OCRPOOL" serve --listen 127.0.0.1:$port --broker "$Q" --token t0k --engine lstm -l "$l" -c 2 \
    --allow-root "$TMP/in" \
    --device cuda:0 --gpu-max-memory-mb 64 >"$TMP/serve.log" 2>&1 &
WPID=$!
PIDS+=("$WPID")
if wait_log "$TMP/serve.log" "recognizer 0 ready" 30; then
    "$OCRPOOL" submit --broker "$Q" -l "$l" "$TMP"/in/* >/dev/null
    t=0
    until "$OCRPOOL" status --broker "$Q" --json 2>/dev/null |
        python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if d['done']+d['failed'] >= 6 else 1)"; do
        sleep 0.2
        t=$((t + 1))
        [ $t -lt 600 ] || break
    done
    sleep 1.5 # the recognizer's next figures
    curl -s -H "Authorization: Bearer t0k" "http://127.0.0.1:$port/metrics" >"$TMP/metrics.txt"
    check "/metrics: the GPU's memory held and cap (64 MiB), in use, utilisation n/a (NaN), active" bash -c \
        "grep -Eq '^ocrpool_recognizer_gpu_memory_bytes\{index=\"0\",device=\"EMU-0\"\} [1-9]' '$TMP/metrics.txt' &&
         grep -q '^ocrpool_recognizer_gpu_memory_cap_bytes{index=\"0\",device=\"EMU-0\"} 67108864' '$TMP/metrics.txt' &&
         grep -q '^ocrpool_recognizer_gpu_utilization_ratio{index=\"0\",device=\"EMU-0\"} NaN' '$TMP/metrics.txt' &&
         grep -q '^ocrpool_recognizer_gpu_active{index=\"0\",device=\"EMU-0\"} 1' '$TMP/metrics.txt' &&
         grep -Eq '^ocrpool_recognizer_lines_total\{index=\"0\",device=\"EMU-0\"\} [1-9]' '$TMP/metrics.txt'"
    "$OCRPOOL" monitor --node "$WPID" >"$TMP/monitor.txt" 2>&1
    check "monitor and /metrics: the device's utilisation n/a, not a number NVML did not give" \
        bash -c "grep -q '^  gpu cuda:0 emulated CUDA device: .*, utilisation n/a' '$TMP/monitor.txt' &&
                 grep -q '^ocrpool_gpu_utilization_percent{gpu=\"0\"} NaN' '$TMP/metrics.txt'"
    check "monitor: the recognizer's GPU line (held of its 64 MiB cap, utilisation n/a, lines/s)" \
        grep -Eq '^    GPU EMU-0 \(emulated on the CPU\): [0-9]+ MiB held of a 64 MiB cap .*utilisation n/a, [0-9.]+ lines/s' "$TMP/monitor.txt"
    if command -v chromium >/dev/null; then
        timeout 60 chromium --headless --no-sandbox --disable-gpu --virtual-time-budget=6000 \
            --dump-dom "http://127.0.0.1:$port/#token=t0k" >"$TMP/dash.html" 2>/dev/null
        check "dashboard: the recognizer's GPU memory of its cap and utilisation n/a" \
            grep -Eq '<td>EMU-0</td><td>ready</td>.*<td>[0-9]+ / 64</td><td>n/a</td>' "$TMP/dash.html"
    else
        skip "dashboard (no chromium)"
    fi
else
    not_ok "serve on cuda:0: its recognizer never said ready"
fi
kill -TERM "$WPID" 2>/dev/null
wait "$WPID"

finish
