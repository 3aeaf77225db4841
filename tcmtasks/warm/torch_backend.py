"""``tcm warm --backend torch``: torch.compile a transformers model built from a config.

No weights are downloaded: ``AutoModelForCausalLM.from_config`` makes random ones, and kernels
depend on shapes and dtypes, not values (FACTS.md item 9). The output is the whole Inductor
cache (fxgraph, aotautograd, generated code and ``triton/<device>/``): with only its Triton part
warm, a first forward saves little.

Runs as ``python -m tcmtasks.warm.torch_backend`` with ``TORCHINDUCTOR_CACHE_DIR`` set, so that
torch and Inductor start clean in a process of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..errors import MissingDependency, TcmError, UsageError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
DTYPES = {
    "fp16": "float16",
    "float16": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp32": "float32",
    "float32": "float32",
}


def model_dir(model: str) -> Path:
    path = Path(model)
    if (path / "config.json").is_file():
        return path
    if (EXAMPLES / model / "config.json").is_file():
        return EXAMPLES / model
    known = ", ".join(sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
    raise UsageError(f"no model {model!r}: give a dir with config.json or one of: {known}")


def warm_model(
    model: str, out: Path, batches: list[int], seqs: list[int], dtypes: list[str]
) -> list[dict]:
    cfg = model_dir(model)
    for d in dtypes:
        if d not in DTYPES:
            raise UsageError(f"unknown dtype {d!r}; use fp16, bf16 or fp32")
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(out.resolve())}
    env.pop("TRITON_CACHE_DIR", None)  # Inductor puts Triton's cache inside its own
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")) if p
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tcmtasks.warm.torch_backend",
            "--config",
            str(cfg),
            "--batch",
            ",".join(map(str, batches)),
            "--seq",
            ",".join(map(str, seqs)),
            "--dtype",
            ",".join(dtypes),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        lines = [x for x in proc.stderr.strip().splitlines() if x.startswith("tcm:")]
        raise TcmError(lines[-1][5:] if lines else f"torch warm failed:\n{proc.stderr[-3000:]}")
    return [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]


def _child(config: str, batches: list[int], seqs: list[int], dtypes: list[str]) -> None:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependency(f"{exc.name} (the torch warm backend)", "torch") from None
    if not torch.cuda.is_available():
        raise UsageError(
            "the torch backend compiles for the GPU it runs on: no CUDA/ROCm GPU "
            "is visible here (use --backend triton on CPU-only machines)"
        )
    cfg = transformers.AutoConfig.from_pretrained(config)
    for dtype_name in dtypes:
        dtype = getattr(torch, DTYPES[dtype_name])
        model = transformers.AutoModelForCausalLM.from_config(cfg).to("cuda", dtype).eval()
        compiled = torch.compile(model)
        for b in batches:
            for s in seqs:
                ids = torch.randint(0, cfg.vocab_size, (b, s), device="cuda")
                torch.cuda.synchronize()
                t = time.perf_counter()
                with torch.no_grad():
                    compiled(input_ids=ids)
                torch.cuda.synchronize()
                print(
                    json.dumps(
                        {
                            "dtype": dtype_name,
                            "batch": b,
                            "seq": s,
                            "first_forward_s": time.perf_counter() - t,
                        }
                    ),
                    flush=True,
                )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", default="1")
    ap.add_argument("--seq", default="128")
    ap.add_argument("--dtype", default="fp16")
    a = ap.parse_args()
    try:
        _child(
            a.config,
            [int(x) for x in a.batch.split(",")],
            [int(x) for x in a.seq.split(",")],
            a.dtype.split(","),
        )
    except TcmError as exc:
        print(f"tcm: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
