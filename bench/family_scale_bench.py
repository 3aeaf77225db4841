"""How a GPU-less warm grows with a model's depth: Llama-3.1-8B's config.json (its real width,
heads, KV heads, vocab and llama3 rope scaling; no weights: the model is built on the meta
device) cut to 2, 8 and 32 (all) layers, each warmed for the H100's profile, as whole
processes under ``/usr/bin/time`` (wall, user, peak RSS of the largest process: the warm's
child).

    TCM_CUDA_PYTHON=.venv-cuda/bin/python python bench/family_scale_bench.py [--layers 2,8,32]

The profile is the shipped H100's re-targeted at that interpreter's runtime (as the tests do),
which holds the grouped-query attention cases an H100 recorded. (The figures in
bench/RESULTS.md were taken before that, with the H200's profile and each grouped-query case
standing in with the choice of the same case without it.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.profiles import H100, profile_for, runtime_of  # noqa: E402

LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "use_cache": True, "vocab_size": 128256,
}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="2,8,32")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--python", default=os.environ.get("TCM_CUDA_PYTHON"))
    args = ap.parse_args()
    if not args.python:
        raise SystemExit("name the CUDA torch interpreter: --python or TCM_CUDA_PYTHON")
    w = Path(tempfile.mkdtemp(prefix="tcm-scale-"))
    profile = profile_for(runtime_of(args.python), w / "h100.json", H100)
    print(f"{platform.node()}: {os.cpu_count()} CPUs; Llama-3.1-8B config, {args.dtype}")
    rows = []
    for n in (int(x) for x in args.layers.split(",")):
        model = w / f"llama-3.1-8b-{n}l"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({**LLAMA_31_8B, "num_hidden_layers": n}))
        timing = w / "time.out"
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(timing), sys.executable, "-m",
             "tcmtasks.cli", "warm", "--backend", "torch", "--model", str(model), "--dtype",
             args.dtype, "--gpu-profile", str(profile), "--python", args.python, "-o",
             str(w / f"out-{n}"), "--json"],
            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode:
            raise SystemExit(f"{n} layers failed:\n{proc.stderr[-3000:]}")
        wall, user, sys_s, rss = timing.read_text().split()[-4:]
        (run,) = json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][-1])["runs"]
        row = {"layers": n, "wall_s": float(wall), "user_s": float(user), "sys_s": float(sys_s),
               "peak_rss_mb": int(rss) / 1024, "compile_s": run["compile_s"],
               "fx_graphs": run["fx_graphs"], "aot_graphs": run["aot_graphs"]}  # fmt: skip
        rows.append(row)
        print(f"  {n:>2} layers: {row['wall_s']:6.1f} s wall (user {row['user_s']:.1f}, sys "
              f"{row['sys_s']:.1f}), compile {row['compile_s']:.1f} s, peak RSS "
              f"{row['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
