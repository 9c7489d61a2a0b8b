#!/usr/bin/env bash
# The command line as a user meets it: config show and its sources,
# refused values, usage errors, missing language data, exit codes.
source "$(dirname "$0")/lib.sh"
unset OCRPOOL_MAX_IMAGE_SIZE SURYA_MAX_IMAGE_SIZE SURYA_GPU_MEMORY_FRACTION OCRPOOL_CONCURRENCY \
    OCRPOOL_MAX_MEMORY_PER_CHILD

show() { "$OCRPOOL" config show "$@" 2>&1; }
# The checks' `bash -c` read config show's text from the environment, never pasted into
# their code (a quote in it would break the command).
declare -x out
row() { grep "^$1 " <<<"$2"; }

out=$(show)
check "config show: every setting listed" test "$(wc -l <<<"$out")" -ge 25
check "config show: pool defaults" bash -c "grep -q '^concurrency  *2 workers  *default' <<<\"\$out\" && grep -q '^max-memory-per-child  *200000 KiB' <<<\"\$out\" && grep -q '^max-tasks-per-child  *50 ' <<<\"\$out\" && grep -q '^acks-late  *true' <<<\"\$out\" && grep -q '^prefetch-multiplier  *1 ' <<<\"\$out\""
check "config show: engine lstm by default, its GPU path used" bash -c "grep -q '^engine  *lstm  *default\$' <<<\"\$out\" && grep '^math-mode ' <<<\"\$out\" | grep >/dev/null 'not used by engine lstm' && ! grep '^device ' <<<\"\$out\" | grep >/dev/null 'not used'"
out=$(show --engine tesseract)
check "config show: unused by tesseract" bash -c "grep '^math-mode ' <<<\"\$out\" | grep >/dev/null 'accepted, not used by engine tesseract' && grep '^compile-table-rec ' <<<\"\$out\" | grep >/dev/null 'accepted, not used by engine tesseract'"

printf 'max_image_size = 1500\nconcurrency = 3\n' >"$TMP/ocrpool.ini"
out=$(SURYA_MAX_IMAGE_SIZE=1200 show --config "$TMP/ocrpool.ini" -c 4)
check "precedence: env alias over file" bash -c "grep -q '^max-image-size  *1200 px  *environment SURYA_MAX_IMAGE_SIZE' <<<\"\$out\""
check "precedence: flag over file" bash -c "grep -q '^concurrency  *4 workers  *flag -c' <<<\"\$out\""
out=$(SURYA_MAX_IMAGE_SIZE=1200 OCRPOOL_MAX_IMAGE_SIZE=1100 show --config "$TMP/ocrpool.ini" --max-image-size=1000)
check "precedence: flag over env" bash -c "grep -q '^max-image-size  *1000 px  *flag --max-image-size' <<<\"\$out\""
out=$(SURYA_MAX_IMAGE_SIZE=1200 OCRPOOL_MAX_IMAGE_SIZE=1100 show)
check "precedence: OCRPOOL_ name over the SURYA_ alias" bash -c "grep -q '^max-image-size  *1100 px  *environment OCRPOOL_MAX_IMAGE_SIZE' <<<\"\$out\""
out=$(show --config "$TMP/ocrpool.ini")
check "precedence: file over default, with file and line" bash -c "grep -q '^max-image-size  *1500 px  *file .*ocrpool.ini:1' <<<\"\$out\""
out=$(show --preset conservative --no-gpu-allow-growth)
check "preset conservative" bash -c "grep -q '^gpu-memory-fraction  *0.5  *preset conservative' <<<\"\$out\" && grep -q '^gpu-max-memory-mb  *4096 MB' <<<\"\$out\""
check "config show --json parses" bash -c "'$OCRPOOL' config show --json | python3 -c 'import json,sys; d=json.load(sys.stdin); m={s[\"name\"]: s for s in d}; assert m[\"concurrency\"][\"value\"] == 2; assert m[\"math-mode\"][\"used\"] is False; assert \"not used by engine lstm\" in m[\"math-mode\"][\"note\"]; assert (m[\"engine\"][\"value\"], m[\"engine\"][\"source\"]) == (\"lstm\", \"default\"); assert m[\"max-image-size\"][\"source\"] == \"default\"'"

# config show never prints the broker's password (text or JSON); the rest of the URL stays.
out=$(OCRPOOL_BROKER='redis://u:s3cr3t@db.example:6379/2' "$OCRPOOL" config show 2>&1)
check "config show: the broker's password is masked" bash -c "grep -q '^broker  *redis://u:\*\*\*@db.example:6379/2  *environment OCRPOOL_BROKER' <<<\"\$out\" && ! grep -q s3cr3t <<<\"\$out\""
out=$(OCRPOOL_BROKER='redis://:s3cr3t@db.example:6379/2' "$OCRPOOL" config show --json 2>&1)
check "config show --json: the broker's password is masked" bash -c "grep -q '\"redis://:\*\*\*@db.example:6379/2\"' <<<\"\$out\" && ! grep -q s3cr3t <<<\"\$out\""
# "1 page", never "1 pages": config show and --help.
out=$(show --concurrency 1)
check "config show: 1 page, 1 worker (singular)" bash -c "grep -q '^batch-pages  *1 page  *default' <<<\"\$out\" && grep -q '^concurrency  *1 worker  *flag' <<<\"\$out\" && ! grep -q ' 1 pages\| 1 workers' <<<\"\$out\""
out=$("$OCRPOOL" worker --help 2>&1)
check "worker --help: (default 1 page)" bash -c "grep -q '(default 1 page)' <<<\"\$out\" && ! grep -q '(default 1 pages)' <<<\"\$out\""

# Refused values: exit 2, one line naming setting, origin and what is allowed.
refused() { # refused NAME EXPECTED-SUBSTRING CMD...
    local name=$1 want=$2
    shift 2
    "$@" >"$TMP/r.out" 2>"$TMP/r.err"
    local rc=$?
    check "$name: exit 2 (got $rc)" test $rc -eq 2
    check "$name: one line on stderr" test "$(wc -l <"$TMP/r.err")" -eq 1
    check "$name: says: $want" grep -qF -- "$want" "$TMP/r.err"
}
refused "fraction 1.5" "setting gpu-memory-fraction: value '1.5' from flag --gpu-memory-fraction is not allowed: a number from 0.01 to 1" \
    "$OCRPOOL" config show --gpu-memory-fraction 1.5
refused "negative size" "setting gpu-max-memory-mb: value '-5' from environment SURYA_GPU_MAX_MEMORY_MB" \
    env SURYA_GPU_MAX_MEMORY_MB=-5 "$OCRPOOL" config show
refused "unknown preset" "one of none,conservative,balanced,performance,cpu" \
    "$OCRPOOL" ocr --preset turbo x.png
refused "cuda:x" "value 'cuda:x' from environment SURYA_GPU_DEVICE" \
    env SURYA_GPU_DEVICE=cuda:x "$OCRPOOL" ocr x.png
refused "bad value in a file" "ocrpool.ini:2" \
    bash -c "printf 'psm = 3\nmax-pixels = lots\n' >'$TMP/ocrpool.ini'; '$OCRPOOL' config show --config '$TMP/ocrpool.ini'"
refused "unknown option" "unknown option '--frobnicate'" "$OCRPOOL" ocr --frobnicate x.png
refused "no input" "no input files" "$OCRPOOL" ocr
refused "unknown command" "unknown command" "$OCRPOOL" frobnicate

# Missing language data: one line naming the language and the Debian package.
"$OCRPOOL" ocr -l kat "$FIXTURES/eng.png" 2>"$TMP/lang.err"
rc=$?
check "missing language: exit 1 (got $rc)" test $rc -eq 1
check "missing language: names the package" grep -q "language 'kat' is not installed.*install the Debian package tesseract-ocr-kat" "$TMP/lang.err"
"$OCRPOOL" ocr -l eng+script/Cyrillic "$FIXTURES/eng.png" 2>"$TMP/lang2.err"
check "missing script: names the package" grep -q "tesseract-ocr-script-cyrl" "$TMP/lang2.err"
check "script/Devanagari works" bash -c "'$OCRPOOL' ocr -l script/Devanagari '$FIXTURES/hin.png' | grep >/dev/null 'भारत'"
check "Devanagari (Debian's file name) works" bash -c "'$OCRPOOL' ocr -l Devanagari '$FIXTURES/hin.png' | grep >/dev/null 'भारत'"

check "--help exits 0" bash -c "'$OCRPOOL' ocr --help >/dev/null"
# What --help says is what happens (issue 21).
"$OCRPOOL" ocr --help >"$TMP/help.txt"
check "ocr --help: one entry for --concurrency" test "$(grep -c -- '--concurrency ' "$TMP/help.txt")" -eq 1
check "ocr --help: log-level's default for worker and serve" grep -q 'log-level .*worker and serve: info' "$TMP/help.txt"
check "status --help: the default priorities" bash -c "'$OCRPOOL' status --help | grep >/dev/null 'default is 0 (POST /v1/jobs queues at 5'"
mkdir "$TMP/cwd"
(cd "$TMP/cwd" && "$OCRPOOL" ocr -q --format txt,json -l eng "$FIXTURES/eng.png" >"$TMP/fmt.out")
check "--format txt,json without -o: files in the current folder, nothing on stdout" \
    bash -c "[ -s '$TMP/cwd/eng.txt' ] && [ -s '$TMP/cwd/eng.json' ] && [ ! -s '$TMP/fmt.out' ]"
# A comment after a value; a '#' inside a word or between quotes is kept.
printf 'max-pages = 5 # five\nlog-level = "info" # more\nbroker = sqlite://%s/a#b.db\ntask-name = "t # x" # c\n' "$TMP" >"$TMP/c.conf"
out=$("$OCRPOOL" config show --config "$TMP/c.conf" 2>&1)
check "config file: a # comment after a value" bash -c "grep -q '^max-pages  *5 pages  *file' <<<\"\$out\" && grep -q '^log-level  *info  *file' <<<\"\$out\""
check "config file: a # inside a word or quotes kept" bash -c "grep -q '^broker  *sqlite://.*/a#b.db  *file' <<<\"\$out\" && grep -q '^task-name  *t # x  *file' <<<\"\$out\""
# A named SQLite queue's folder is created; status --tasks lists tasks in text too.
Q="sqlite://$TMP/new/folder/q.db"
check "submit: a queue file's missing folder is created" bash -c "'$OCRPOOL' submit --broker '$Q' '$FIXTURES/eng.png' >'$TMP/id'"
check "status --tasks: a line per task in text" bash -c "'$OCRPOOL' status --broker '$Q' --tasks | grep >/dev/null \"^  ready \$(cat '$TMP/id') .*eng.png page 1\$\""
check "status without --tasks: no task lines" bash -c "! '$OCRPOOL' status --broker '$Q' | grep >/dev/null '^  ready '"
# A page whose file is gone before a worker (without --allow-root) reads it: the reason
# names the file, as a Celery client or `status` shows it (issue 21).
Q2="sqlite://$TMP/gone/q.db"
cp "$FIXTURES/eng.png" "$TMP/gone.png"
"$OCRPOOL" submit --broker "$Q2" -l eng "$TMP/gone.png" >/dev/null
rm "$TMP/gone.png"
"$OCRPOOL" worker --broker "$Q2" -c 1 >"$TMP/gone.log" 2>&1 &
W=$!
PIDS+=("$W")
for _ in $(seq 150); do "$OCRPOOL" status --broker "$Q2" | grep >/dev/null ' 1 failed' && break; sleep 0.2; done
kill -TERM "$W"
wait "$W"
"$OCRPOOL" status --broker "$Q2" >"$TMP/gone.status"
sed 's/^/# /' "$TMP/gone.status"
check "a missing file: the failure names it" \
    grep -qF "page 1: cannot open $TMP/gone.png: No such file or directory" "$TMP/gone.status"
check "requeue: '0 pages back in the queue'" \
    bash -c "'$OCRPOOL' requeue --broker '$Q2' --buried | grep -x >/dev/null '0 pages back in the queue'"
check "requeue: '1 page back in the queue'" \
    bash -c "'$OCRPOOL' requeue --broker '$Q2' --failed | grep -x >/dev/null '1 page back in the queue'"
check "version" bash -c "'$OCRPOOL' version | grep >/dev/null '^ocrpool '"
# OpenMP limited to one thread unless the user chose otherwise (the Tesseract engine says so).
check "OMP_THREAD_LIMIT=1 in effect" bash -c "env -u OMP_THREAD_LIMIT '$OCRPOOL' ocr --engine tesseract --log-level info -l eng '$FIXTURES/eng.png' 2>&1 >/dev/null | grep >/dev/null 'OMP_THREAD_LIMIT=1\$'"
check "OMP_THREAD_LIMIT of the user kept" bash -c "OMP_THREAD_LIMIT=2 '$OCRPOOL' ocr --engine tesseract --log-level info -l eng '$FIXTURES/eng.png' 2>&1 >/dev/null | grep >/dev/null 'OMP_THREAD_LIMIT=2\$'"
finish
