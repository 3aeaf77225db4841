#!/usr/bin/env bash
# The GPU machine's session for the whole-cache and tracking proofs (bench/RESULTS.md):
#   bash bench/gpu_session_whole_cache.sh OUTDIR
# The machine has torch, Triton and transformers; tcm's other needs travel as wheels in .whl/
# (installed by bench/gpu_env.sh).
. "$(dirname "$0")/gpu_env.sh" "$@"
python3 -c 'import torch, triton, transformers, sys; print(sys.version.split()[0], torch.__version__, triton.__version__, transformers.__version__, torch.cuda.get_device_name())'
python3 bench/gpu_proof_whole_cache.py --rounds 3 > "$out/whole_cache.json" 2> "$out/whole_cache.err"
echo "whole cache: exit $?"; tail -n 1 "$out/whole_cache.json"
python3 bench/track_bench.py --rounds 3 > "$out/track_bench.txt" 2>&1
echo "track bench: exit $?"; tail -n 15 "$out/track_bench.txt"
(cd /tmp && rm -rf pipe && mkdir pipe && cd pipe && timeout 300 python3 -m tcmtasks.pipeline \
    warm_and_ship model=opt-125m > "$out/pipeline.txt" 2>&1; echo "pipeline: exit $?" >> "$out/pipeline.txt"
 cat build/opt-125m/package.json >> "$out/pipeline.txt" 2>/dev/null)
tail -n 12 "$out/pipeline.txt"
