#!/usr/bin/env bash
# Benchmark of the Redis/Celery worker (not part of `make test`): the same
# pages on the same redis-server (started here, on a loopback port) through
# `ocrpool worker -c 2` and through the reference Python Celery worker
# (bench/celery_ref.py: prefork -c 2, prefetch 1, acks late, max tasks per
# child 50, max memory per child 200000, tesserocr, 2048 px Lanczos); once
# with ocrpool's Tesseract engine, once with its own recognizer (--engine lstm).
#   bench/celery.sh [pages]        (BUILD=build by default; pages 16)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
work=$PWD/$BUILD/bench
[ -f "$work/eng-a4.png" ] || { echo "run bench/run.sh first (it renders the pages)"; exit 1; }
n=${1:-16}
mkdir -p "$work/redis" "$work/cpages"
for i in 1 2 3 4; do
    cp "$work/eng-a4.png" "$work/cpages/e$i.png"
    cp "$work/san-a4.png" "$work/cpages/s$i.png"
done
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --dir "$work/redis" --save "" --appendonly no \
    --daemonize no >"$work/redis.log" 2>&1 &
rpid=$!
trap 'kill "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping 2>/dev/null | grep >/dev/null PONG && break; sleep 0.1; done
for engine in tesseract lstm; do
    BENCH_ENGINE=$engine OCRPOOL=$PWD/$BUILD/ocrpool WORK=$work /usr/bin/python3 bench/celery_bench.py \
        "redis://127.0.0.1:$port/0" "$n" san+eng "$work"/cpages/*.png
    echo
done
