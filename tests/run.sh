#!/usr/bin/env bash
# Runs ocrpool's tests: the cmocka unit binaries, the fuzz harnesses' replay
# of their crash regressions and seed corpora (fuzz/), then the integration
# scripts against the real binary. Each runs under a timeout. Prints one
# closing line, "N passed, N failed, N skipped". A skipped check (a script's
# "skip - REASON" line, cmocka's SKIPPED) is counted apart: never as passed.
#   tests/run.sh [unit|integration [NAME...]]     (BUILD=build by default)
# With NAMEs (test_pool or pool), only those integration scripts run.
set -uo pipefail
cd "$(dirname "$0")/.."
export BUILD=${BUILD:-build}
export OCRPOOL="$PWD/$BUILD/ocrpool"
export FIXTURES="$PWD/$BUILD/fixtures"
what=${1:-all}
[ $# -gt 0 ] && shift
only=("$@")
passed=0
failed=0
skipped=0
failures=()

if [ -n "${OCP_ASAN:-}" ]; then
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=99}
    export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=98
    # AddressSanitizer's shadow memory puts every worker over the default 200000 KiB.
    export OCRPOOL_MAX_MEMORY_PER_CHILD=0
fi

count() { # count NAME LOG RC: adds the ok/not ok lines of a TAP-ish log
    local name=$1 log=$2 rc=$3 ok nok sk
    ok=$(grep -c '^ok ' "$log")
    nok=$(grep -c '^not ok ' "$log")
    sk=$(grep -c '^skip ' "$log")
    # cmocka: "[  PASSED  ] N test(s)." / "[  FAILED  ] N test(s)"
    if grep -q '^\[==========\]' "$log"; then
        ok=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
        nok=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
        sk=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
        ok=${ok:-0}
        nok=${nok:-0}
        sk=${sk:-0}
    fi
    if [ "$rc" -ne 0 ] && [ "$nok" -eq 0 ]; then
        nok=1 # crashed, timed out or failed outside a check
        echo "not ok - $name exited with status $rc" >>"$log"
    fi
    passed=$((passed + ok))
    failed=$((failed + nok))
    skipped=$((skipped + sk))
    if [ "$nok" -gt 0 ]; then
        failures+=("$name")
        # Each failure with the comment lines that came before it (what the check saw).
        grep -B6 -E '^not ok|^\[  (FAILED|ERROR)|ERROR|runtime error|Sanitizer' "$log" |
            grep -E '^#|^not ok|^\[  (FAILED|ERROR)|ERROR|runtime error|Sanitizer' | head -30 | sed 's/^/    /'
    fi
    printf '%-40s %3d passed, %d failed%s\n' "$name" "$ok" "$nok" \
        "$([ "$sk" -gt 0 ] && echo ", $sk skipped")"
    [ "$sk" -gt 0 ] && grep -E '^skip |^\[  SKIPPED \]' "$log" | head -5 | sed 's/^/    /'
    return 0
}

logdir="$BUILD/test-logs"
# The nodes the tests start keep their control sockets to themselves.
export XDG_RUNTIME_DIR
XDG_RUNTIME_DIR=$(mktemp -d)
chmod 700 "$XDG_RUNTIME_DIR"
trap 'rm -rf "$XDG_RUNTIME_DIR"' EXIT
mkdir -p "$logdir"

if [ "$what" = all ] || [ "$what" = unit ]; then
    for t in "$BUILD"/tests/test_*; do
        [ -x "$t" ] || continue
        name=unit/$(basename "$t")
        log="$logdir/$(basename "$t").log"
        timeout 120 "$t" >"$log" 2>&1
        count "$name" "$log" $?
    done
fi

# Every fuzz/regress/NAME and fuzz/corpus/NAME input through harness NAME, one test each
# (built by the same compiler and sanitizers as the rest: make test, make asan).
if [ "$what" = all ] || [ "$what" = unit ]; then
    for t in "$BUILD"/fuzz/replay_*; do
        [ -x "$t" ] || continue
        n=${t##*/replay_}
        name=fuzz/$n
        log="$logdir/fuzz_$n.log"
        TMPDIR=$XDG_RUNTIME_DIR timeout 300 "$t" fuzz/regress/"$n" fuzz/corpus/"$n" >"$log" 2>&1
        count "$name" "$log" $?
    done
fi

if [ "$what" = all ] || [ "$what" = integration ]; then
    tests/data/make-fixtures.sh "$FIXTURES" || { echo "fixtures could not be made"; exit 1; }
    scripts=(tests/integration/test_*.sh)
    if [ ${#only[@]} -gt 0 ]; then
        scripts=()
        for n in "${only[@]}"; do
            n=${n%.sh}
            n=test_${n#test_}
            [ -f "tests/integration/$n.sh" ] || { echo "no integration test $n"; exit 2; }
            scripts+=("tests/integration/$n.sh")
        done
    fi
    for t in "${scripts[@]}"; do
        name=integration/$(basename "$t" .sh)
        log="$logdir/$(basename "$t" .sh).log"
        OCP_TEST_OUT="$PWD/$logdir" timeout 600 bash "$t" >"$log" 2>&1
        count "$name" "$log" $?
    done
fi

echo
[ ${#failures[@]} -eq 0 ] || echo "failed: ${failures[*]} (logs in $logdir)"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
