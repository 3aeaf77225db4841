"""The H100 and H200 profiles that ship with tcm, re-targeted at a test interpreter's runtime:
their device facts are the GPUs', their torch/Triton/Python those of the CUDA torch under test
(a profile names the runtime it must be replayed with, or every key would miss)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tcmtasks.gpuprofile import load, save, shipped

REPO = Path(__file__).resolve().parents[2]
H200 = shipped()["nvidia-h200"]
H100 = shipped()["nvidia-h100"]
_RUNTIME = (
    "import json, torch, triton; from tcmtasks.producer import detect; d = detect(); "
    "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
    "'triton': triton.__version__, 'python': d.python, 'triton_key': d.triton_key, "
    "'ptxas': d.torch_ptxas or d.ptxas, "
    "'available': torch.cuda.is_available(), "
    "'transformers': __import__('transformers').__version__}))"
)


def runtime_of(python: str) -> dict:
    out = subprocess.run(
        [python, "-c", _RUNTIME],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def profile_for(runtime: dict, dest: Path, source: Path = H200) -> Path:
    """``source`` (the H200's by default) with ``runtime``'s torch, Triton and Python."""
    p = load(source)
    p.torch, p.torch_cuda, p.triton = runtime["torch"], runtime["cuda"], runtime["triton"]
    p.python, p.triton_key, p.ptxas = runtime["python"], runtime["triton_key"], runtime["ptxas"]
    p.libraries = {"transformers": runtime["transformers"]}
    p.inductor_config = {}  # the GPU machine's are its torch's; the runtime's own apply here
    return save(p, dest)
