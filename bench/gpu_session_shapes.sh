#!/usr/bin/env bash
# The GPU machine's session for issue 28's proof (bench/gpu_proof_shapes.py), one call (~6 min
# on an H100; carry .whl):
#   bash bench/gpu_session_shapes.sh OUTDIR
# This GPU's profile is recorded once, then five proofs run side by side (16 cores; PARTS=
# "dynamic:opt-125m" picks some; DIAG=1 logs every Triton launcher, bench/launcherdiag): tiny-opt
# and OPT-125m warmed GPU-less with --any-order and with --dynamic over batch 1,2,8, and
# OPT-125m's own warm-up script through the command backend; each pulled and run as a node
# in other orders under `tcm track --require-hits`.
. "$(dirname "$0")/gpu_env.sh" "$1"
python3 -c 'import torch, triton, transformers, sys; print(sys.version.split()[0], torch.__version__, triton.__version__, transformers.__version__, torch.cuda.get_device_name())'
python3 -m tcmtasks.cli gpu --save-profile "$out/gpu.json" > "$out/profile.out" 2>&1 || { cat "$out/profile.out"; exit 1; }
tail -n 1 "$out/profile.out"
pids=()
# PARTS="dynamic:opt-125m ...": some of them only
for run in ${PARTS:-any:tiny-opt any:opt-125m dynamic:tiny-opt dynamic:opt-125m script:opt-125m}; do
  part=${run%%:*} model=${run#*:}
  python3 bench/gpu_proof_shapes.py --out "$out" --part "$part" --model "$model" ${DIAG:+--diag} \
    --profile "$out/gpu.json" > "$out/$part-$model.out" 2> "$out/$part-$model.err" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
for f in "$out"/*.out; do echo "== $f"; tail -n 4 "$f"; done
for f in "$out"/*.err; do [ -s "$f" ] && { echo "== $f"; tail -n 8 "$f"; }; done
echo "shapes proof: exit $rc"
# one file back (the device returns a few files only)
tar czf /tmp/shapes-proof.tgz -C "$out" . && rm -rf "${out:?}"/* && mv /tmp/shapes-proof.tgz "$out/"
