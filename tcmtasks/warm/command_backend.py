"""``tcm warm --backend command``: run any command with its compile caches pointed at the
output: Triton's (``TRITON_CACHE_DIR``) by default; with ``inductor`` the output is the
workload's whole Inductor cache (``TORCHINDUCTOR_CACHE_DIR``, Triton's kernels in its
``triton/<device>`` dirs); with ``vllm`` its vLLM cache root (``VLLM_CACHE_ROOT``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from ..cache.entries import iter_dirs
from ..cache.roots import discover
from ..errors import UsageError


def _keys(out: Path) -> set[str]:
    """Every entry name in the Triton roots at or under ``out``."""
    return {
        f"{r.path.name}/{name}" if r.path != out else name
        for r in discover([out])
        if r.path.is_dir()
        for name, _st, _err in iter_dirs(r.path)
    }


def run_command(
    command: list[str], out: Path, *, inductor: bool = False, vllm: bool = False
) -> dict[str, Any]:
    """Run ``command`` with its caches in ``out``; report the Triton entries that are new since
    the start (what was there before is not this warm's)."""
    if not command:
        raise UsageError(
            "give the command after --, e.g. tcm warm --backend command -o DIR -- python serve.py"
        )
    if inductor and vllm:
        raise UsageError("--inductor and --vllm name different caches: pick one")
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    before = _keys(root)
    env = dict(os.environ)
    if inductor:
        env.pop("TRITON_CACHE_DIR", None)  # so Inductor keeps Triton's kernels in its own dir
        env["TORCHINDUCTOR_CACHE_DIR"] = str(root)
    elif vllm:
        env.pop("TRITON_CACHE_DIR", None)
        env["VLLM_CACHE_ROOT"] = str(root)
    else:
        env["TRITON_CACHE_DIR"] = str(root)
    try:
        rc = subprocess.run(command, env=env).returncode
    except FileNotFoundError:
        raise UsageError(f"command not found: {command[0]}") from None
    new = sorted(_keys(root) - before)
    return {
        "returncode": rc,
        "new_entries": len(new),
        "new_keys": new,
        "existing_entries": len(before),
    }
