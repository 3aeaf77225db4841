#!/usr/bin/env bash
# The GPU machine's session for the no-C-compiler proof (bench/RESULTS.md), one call:
#   bash bench/gpu_session_nocc.sh OUTDIR
# The images come from a CPU-only machine (carried in .device/nocc): the tutorials kernel set
# warmed by `tcm warm --backend triton --target cuda:90` in a cp312 venv (Triton 3.6.0), packaged
# with its C helpers (tag with-helpers) and without them (tag without-helpers).
. "$(dirname "$0")/gpu_env.sh" "$1"
python3 -c 'import torch, triton, sys; print(sys.version.split()[0], torch.__version__, triton.__version__, torch.cuda.get_device_name())'
python3 bench/gpu_proof_nocc.py --with oci:.device/nocc/image:with-helpers \
    --without oci:.device/nocc/image:without-helpers --out "$out" ${ROUNDS:+--rounds $ROUNDS} \
    > "$out/nocc.out" 2> "$out/nocc.err"
echo "nocc proof: exit $?"
cat "$out/nocc.out"; tail -n 20 "$out/nocc.err"
