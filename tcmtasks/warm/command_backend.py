"""``tcm warm --backend command``: run any command with the caches pointed at the output."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from ..cache.entries import iter_dirs
from ..errors import UsageError


def _keys(root: Path) -> set[str]:
    return {name for name, _st, _err in iter_dirs(root)} if root.is_dir() else set()


def run_command(command: list[str], out: Path, *, inductor: bool = False) -> dict[str, Any]:
    """Run ``command`` with TRITON_CACHE_DIR=out (and TORCHINDUCTOR_CACHE_DIR=out/inductor);
    report the entries that are new since the start (what was there before is not this
    warm's)."""
    if not command:
        raise UsageError(
            "give the command after --, e.g. tcm warm --backend command -o DIR -- python serve.py"
        )
    out.mkdir(parents=True, exist_ok=True)
    triton_dir = out.resolve()
    before = _keys(triton_dir)
    env = {**os.environ, "TRITON_CACHE_DIR": str(triton_dir)}
    if inductor:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(triton_dir / "inductor")
    try:
        rc = subprocess.run(command, env=env).returncode
    except FileNotFoundError:
        raise UsageError(f"command not found: {command[0]}") from None
    new = sorted(_keys(triton_dir) - before)
    return {
        "returncode": rc,
        "new_entries": len(new),
        "new_keys": new,
        "existing_entries": len(before),
    }
