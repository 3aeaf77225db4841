"""Tests that need a tool or module skip, with the reason, when it is missing; in CI
(``TCM_CI=1``, set by .ci/run, which installs them all) a missing one fails the test instead,
so no test can pass by checking nothing."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest


def _missing(what: str) -> None:
    message = f"{what} is not installed (.ci/run installs it)"
    if os.environ.get("TCM_CI"):
        pytest.fail(f"TCM_CI is set, so every test must run: {message}")
    pytest.skip(message)


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        _missing(", ".join(missing))


def require_modules(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        _missing("the Python module " + ", ".join(missing))


def require_cuda_python() -> str:
    """The interpreter with a CUDA build of torch that the GPU-less warm tests compile with:
    ``TCM_CUDA_PYTHON`` (.ci/run makes one: torch 2.14.1 from this machine's disk, 5.5 GB,
    kept out of the test extra). This machine has no GPU, which is what those tests need."""
    python = os.environ.get("TCM_CUDA_PYTHON")
    if not python or not os.access(python, os.X_OK):
        _missing("an interpreter with CUDA torch (TCM_CUDA_PYTHON)")
    return str(python)


def require_triton39_python() -> str:
    """An interpreter with Triton 3.9.0 (``TCM_TRITON39_PYTHON``; .ci/run makes one with pip):
    the first Triton whose HIP keys hash its bitcode libraries' contents, not their paths."""
    python = os.environ.get("TCM_TRITON39_PYTHON")
    if not python or not os.access(python, os.X_OK):
        _missing("an interpreter with Triton 3.9.0 (TCM_TRITON39_PYTHON)")
    return str(python)
