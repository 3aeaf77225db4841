#!/usr/bin/env bash
# The GPU machine's session for the fleet proof (bench/RESULTS.md), one call per GPU kind:
#   bash bench/gpu_session_fleet.sh OUTDIR oci:DIR:TAG
# The image is the one `doit warm_and_ship model=opt-125m` made on a CPU-only machine (carried
# in .device/); tcm's other needs travel as wheels in .whl/ (installed by bench/gpu_env.sh).
. "$(dirname "$0")/gpu_env.sh" "$1"
image=$2
python3 -c 'import torch, triton, transformers, sys; print(sys.version.split()[0], torch.__version__, triton.__version__, transformers.__version__, torch.cuda.get_device_name())'
python3 bench/gpu_proof_fleet.py --image "$image" --out "$out" ${ROUNDS:+--rounds $ROUNDS} \
    > "$out/fleet.out" 2> "$out/fleet.err"
echo "fleet proof: exit $?"
tail -n 1 "$out/fleet.out"; tail -n 30 "$out/fleet.err"
