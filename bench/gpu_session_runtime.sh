#!/usr/bin/env bash
# The GPU machine's second session (bench/RESULTS.md): the whole-cache proof again, with the
# order rotated and a whole-dir copy as the upper bound; then the runtime proof on an image
# warmed on the CPU machine for Python 3.11 and 3.12 (carried in .proof/two-pythons).
#   bash bench/gpu_session_runtime.sh OUTDIR
. "$(dirname "$0")/gpu_env.sh" "$@"
python3 bench/gpu_proof_runtime.py "oci:$PWD/.proof/two-pythons:v1" > "$out/runtime.json" 2>&1
echo "runtime: exit $?"; tail -n 1 "$out/runtime.json"
python3 bench/gpu_proof_whole_cache.py --rounds 2 --scenarios local,restored,copied,mega \
    > "$out/whole_cache2.json" 2> "$out/whole_cache2.err"
echo "whole cache: exit $?"; tail -n 1 "$out/whole_cache2.json"
