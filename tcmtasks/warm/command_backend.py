"""``tcm warm --backend command``: run any command with its compile caches pointed at the
output: Triton's (``TRITON_CACHE_DIR``) by default; with ``inductor`` the output is the
workload's whole Inductor cache (``TORCHINDUCTOR_CACHE_DIR``, Triton's kernels in its
``triton/<device>`` dirs); with ``vllm`` its vLLM cache root (``VLLM_CACHE_ROOT``).

Triton's C helpers come with the run: with a GPU the command builds them itself. Under
``inductor`` a torch.compile process builds ``cuda_utils`` in Triton's default cache
(``$TRITON_HOME/.triton/cache``) before Inductor points Triton at its own dir
(warm/torch_backend.py ``_helpers``): the command gets a ``TRITON_HOME`` of its own, and the
helpers it left there join the output's ``triton/0``, from where a restore places
``cuda_utils`` in the node's plain Triton cache as well."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..cache.entries import EntryKind, iter_dirs, scan_root
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
    with tempfile.TemporaryDirectory(prefix="tcm-triton-home-") as home:
        if inductor:
            env["TRITON_HOME"] = home
        try:
            rc = subprocess.run(command, env=env).returncode
        except FileNotFoundError:
            raise UsageError(f"command not found: {command[0]}") from None
        helpers = _adopt_helpers(Path(home) / ".triton" / "cache", root / "triton" / "0")
    new = sorted(_keys(root) - before)
    return {
        "returncode": rc,
        "new_entries": len(new),
        "new_keys": new,
        "existing_entries": len(before),
        "helpers": helpers,
    }


def _adopt_helpers(default_cache: Path, triton_dir: Path) -> list[str]:
    """Move the C helper modules the command built in Triton's default cache into the
    output's Triton dir (the rest there is not the warm's output); their names."""
    if not default_cache.is_dir():
        return []
    adopted = []
    for entry in scan_root(default_cache):
        if entry.kind != EntryKind.MODULE or (triton_dir / entry.key).exists():
            continue
        triton_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(str(entry.path), str(triton_dir / entry.key))
        adopted.append(str(entry.name))
    return sorted(adopted)
