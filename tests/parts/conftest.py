"""Copies of the session's real Inductor cache (tests/conftest.py, ``warmed_inductor``), and
running the tiny model against one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def model_env(inductor_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRITON_", "TCM_", "TORCHINDUCTOR_", "VLLM_", "TORCH_"))
    }
    env.update(TORCHINDUCTOR_CACHE_DIR=str(inductor_dir), PYTHONPATH=str(REPO), **extra)
    return env


def run_model(inductor_dir: Path) -> dict:
    """Run the tiny model in a fresh process; Inductor's counters for that run."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.tiny_model"],
        env=model_env(inductor_dir),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compiled_nothing(counters: dict) -> bool:
    ind, aot = counters["inductor"], counters["aot_autograd"]
    return (
        ind.get("fxgraph_cache_hit") == 1
        and aot.get("autograd_cache_hit") == 1
        and not ind.get("fxgraph_cache_miss")
        and not aot.get("autograd_cache_miss")
    )


@pytest.fixture
def inductor_cache(warmed_inductor, tmp_path) -> Path:
    """A private copy of the session's Inductor cache, at a path of its own."""
    return Path(shutil.copytree(warmed_inductor, tmp_path / "producer" / "inductor"))
