#!/usr/bin/env bash
# The GPU machine's session for the throughput issue (bench/RESULTS.md): the Triton restore
# proof (cold run, package, pull, restored run: the pull's share of a restore), then the
# throughput pairs that need no sqlite3 CLI (extract, package zstd, package gzip).
#   bash bench/gpu_session_throughput.sh OUTDIR
. "$(dirname "$0")/gpu_env.sh" "$@"
nproc; df -h /tmp | tail -n 1
python3 bench/gpu_proof_restore.py > "$out/restore.json" 2> "$out/restore.err"
echo "restore: exit $?"; tail -n 1 "$out/restore.json"
timeout 400 python3 bench/throughput_bench.py --only extract,zstd,gzip --rounds 3 \
    > "$out/throughput.txt" 2>&1
echo "throughput: exit $?"; cat "$out/throughput.txt" | head -n 5
