#!/usr/bin/env bash
# The GPU machine's session for the GPU-less warm proof (bench/RESULTS.md):
#   bash bench/gpu_session_gpuless.sh OUTDIR
# The machine has torch, Triton and transformers; tcm's other needs travel as wheels in .whl/
# (installed by bench/gpu_env.sh).
. "$(dirname "$0")/gpu_env.sh" "$@"
python3 -c 'import torch, triton, transformers, sys; print(sys.version.split()[0], torch.__version__, triton.__version__, transformers.__version__, torch.cuda.get_device_name())'
command -v unshare mount ldconfig
# one model per call fits the 10-minute limit: MODELS=tiny-opt, then MODELS=opt-125m
python3 bench/gpu_proof_gpuless.py --out "$out" ${ROUNDS:+--rounds $ROUNDS} ${MODELS:+--models $MODELS} ${KEYS_ONLY:+--keys-only} ${QUICK:+--quick} \
    > "$out/gpuless.json" 2> "$out/gpuless.err"
echo "gpuless proof: exit $?"
tail -n 3 "$out/gpuless.json"; tail -n 30 "$out/gpuless.err"
