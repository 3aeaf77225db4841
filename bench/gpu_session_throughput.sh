#!/usr/bin/env bash
# The GPU machine's session for the throughput issue (bench/RESULTS.md): the Triton restore
# proof (cold run, package, pull, restored run: the pull's share of a restore), then the
# throughput pairs that need no sqlite3 CLI (extract, package zstd, package gzip).
#   bash bench/gpu_session_throughput.sh OUTDIR
set -uo pipefail
out=${1:-/tmp/out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nproc; df -h /tmp | tail -n 1
python3 bench/gpu_proof_restore.py > "$out/restore.json" 2> "$out/restore.err"
echo "restore: exit $?"; tail -n 1 "$out/restore.json"
timeout 400 python3 bench/throughput_bench.py --only extract,zstd,gzip --rounds 3 \
    > "$out/throughput.txt" 2>&1
echo "throughput: exit $?"; cat "$out/throughput.txt" | head -n 5
