#!/usr/bin/env bash
# The GPU machine's session for the no-C-compiler proofs (bench/RESULTS.md), one call:
#   bash bench/gpu_session_nocc.sh OUTDIR
# The images come from a CPU-only machine (carried in .device/):
# * .device/nocc: the tutorials kernel set warmed by `tcm warm --backend triton --target cuda:90`
#   in a cp312 venv (Triton 3.6.0), packaged with its C helpers (tag with-helpers) and without
#   them (tag without-helpers);
# * .device/nocc-opt: what `doit warm_and_ship model=opt-125m` made in that venv (torch 2.11.0,
#   GPU-less for the shipped H100 and H200 profiles; tag opt-125m-triton3.6.0), and the same
#   fleet dir packaged with its helper modules removed (tag without-helpers).
. "$(dirname "$0")/gpu_env.sh" "$1"
python3 -c 'import torch, triton, sys; print(sys.version.split()[0], torch.__version__, triton.__version__, torch.cuda.get_device_name())'
python3 -c 'from triton.backends.nvidia.driver import libcuda_dirs; print("libcuda_dirs:", libcuda_dirs())'
echo "CC=${CC-unset} CXX=${CXX-unset}"
# this GPU's profile as tcm records it now (grouped-query attention choices since 2026-12-07)
python3 -m tcmtasks.cli gpu --save-profile "$out/profile.json" > /dev/null 2> "$out/profile.err"
echo "profile: exit $? ($(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["name"], len(d["sdp_choices"]), "sdp cases")' "$out/profile.json" 2>&1))"
python3 bench/gpu_proof_nocc.py --with oci:.device/nocc/image:with-helpers \
    --without oci:.device/nocc/image:without-helpers --out "$out" ${ROUNDS:+--rounds $ROUNDS} \
    ${NOPROBE:+--no-probe} > "$out/nocc.out" 2> "$out/nocc.err"
echo "tutorials nocc proof: exit $?"
cat "$out/nocc.out"; tail -n 20 "$out/nocc.err"
if [ -d .device/nocc-opt ]; then
    python3 bench/gpu_proof_nocc_opt.py --with oci:.device/nocc-opt/image:opt-125m-triton3.6.0 \
        --without oci:.device/nocc-opt/image:without-helpers --out "$out" \
        ${ROUNDS:+--rounds $ROUNDS} > "$out/nocc_opt.out" 2> "$out/nocc_opt.err"
    echo "OPT-125m nocc proof: exit $?"
    cat "$out/nocc_opt.out"; tail -n 30 "$out/nocc_opt.err"
fi
