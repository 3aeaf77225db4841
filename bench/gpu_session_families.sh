#!/usr/bin/env bash
# The GPU machine's session for the model-family proofs (issue 27, bench/RESULTS.md), one call
# per dtype (each ~5 min on an H200):
#   DTYPE=bf16 bash bench/gpu_session_families.sh OUTDIR
# Per family (Llama-3.2, Qwen2.5, Mistral, Gemma-2, Phi-3; 2-layer configs that ship with
# tcm): this GPU's profile recorded here (grouped-query attention included), a GPU warm, a
# GPU-less warm with the driver hidden, their FX-graph/AOTAutograd/Triton keys compared, the
# GPU-less cache packaged and pulled, a first forward restored vs local, and a `tcm track` run
# that must compile nothing (bench/gpu_proof_gpuless.py --quick).
. "$(dirname "$0")/gpu_env.sh" "$1"
python3 -c 'import torch, triton, transformers, sys; print(sys.version.split()[0], torch.__version__, triton.__version__, transformers.__version__, torch.cuda.get_device_name())'
# DYNAMIC=1 MODELS=tiny-opt,opt-125m DTYPE=fp16: the same for torch.compile(dynamic=True);
# ANY_ORDER=1 (same models): warms of 1x128 and 2x128 with --any-order, forwards calling 2x128,
# 1x128, 4x128 (issue 28)
python3 bench/gpu_proof_gpuless.py --quick --rounds "${ROUNDS:-1}" --dtypes "${DTYPE:-bf16}" ${DYNAMIC:+--dynamic} ${ANY_ORDER:+--any-order} \
    --models "${MODELS:-llama-3.2-1b-2l,qwen2.5-0.5b-2l,mistral-7b-v0.1-2l,gemma-2-2b-2l,phi-3-mini-4k-2l}" \
    --out "$out" > "$out/families.out" 2> "$out/families.err"
echo "families proof ($DTYPE): exit $?"
python3 - "$out" <<'PY'
import json, sys, pathlib
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    m = json.loads(f.read_text())
    if not isinstance(m, dict) or "keys_equal" not in m:
        continue
    print(f.stem, "keys", m.get("keys_equal"), "restored/local %.3f" % m["restored_over_local"]
          if "restored_over_local" in m else "", "track", (m.get("track") or {}).get("compiled_nothing"),
          "passed", m.get("passed"))
PY
tail -n 3 "$out/families.out"; tail -n 20 "$out/families.err"
