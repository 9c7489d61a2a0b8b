#!/usr/bin/env bash
# Runs libFuzzer harnesses (make fuzz): each build-fuzz/fuzz/fuzz_NAME for FUZZ_S seconds
# (default 60; or FUZZ_RUNS executions, whichever comes first) from build-fuzz/corpus/NAME, a scratch folder that starts as a copy of the
# tree's fuzz/corpus/NAME and keeps what the fuzzer adds (the tree is never written).
# FUZZ_JOBS harnesses run at once (default 1). A crash, leak, timeout or out-of-memory input
# is kept in build-fuzz/crashes/NAME/. Prints one line per harness (name, executions,
# executions per second, crashes) and exits 1 when any harness crashed.
#   fuzz/run.sh NAME...
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_S:-60}
jobs=${FUZZ_JOBS:-1}
out=build-fuzz
export TMPDIR="$PWD/$out/tmp"
mkdir -p "$TMPDIR" "$out/logs"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

one() { # one NAME: runs it; its summary line goes to $out/logs/NAME.sum
    local name=$1 bin=$out/fuzz/fuzz_$1 corpus=$out/corpus/$1 crashes=$out/crashes/$1
    local log=$out/logs/$1.log
    mkdir -p "$corpus" "$crashes"
    [ -d "fuzz/corpus/$name" ] && cp -n fuzz/corpus/"$name"/* "$corpus"/ 2>/dev/null
    local before
    before=$(find "$crashes" -type f | wc -l)
    "$bin" -max_total_time="$secs" ${FUZZ_RUNS:+-runs=$FUZZ_RUNS} -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$crashes/" "$corpus" >"$log" 2>&1
    local rc=$? execs rate after
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    after=$(find "$crashes" -type f | wc -l)
    local found=$((after - before))
    if [ "$rc" -ne 0 ] && [ "$found" -eq 0 ]; then
        found=1 # died without an artifact: see the log
    fi
    printf '%-10s %10s executions %7s/s  %d crashes%s\n' "$name" "${execs:-0}" "${rate:-0}" \
        "$found" "$([ "$found" -gt 0 ] && echo "  (see $log, $crashes/)")" >"$out/logs/$name.sum"
}

running=0
for name in "$@"; do
    if [ ! -x "$out/fuzz/fuzz_$name" ]; then
        echo "fuzz: $out/fuzz/fuzz_$name is not built (make fuzz)" >&2
        exit 2
    fi
    rm -f "$out/logs/$name.sum"
    one "$name" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait
bad=0
for name in "$@"; do
    cat "$out/logs/$name.sum"
    grep -q ' 0 crashes' "$out/logs/$name.sum" || bad=1
done
exit $bad
