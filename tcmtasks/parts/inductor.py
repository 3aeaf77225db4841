"""Inductor's cache (``TORCHINDUCTOR_CACHE_DIR``): ``fxgraph/``, ``aotautograd/``, generated
code in two-letter dirs (``.py``, and ``.cpp``/``.so`` on the CPU), autotune results
(``*.best_config``), ``locks/`` (never shipped), and ``triton/<device>/``, a Triton cache.

Paths: FX-graph entries and generated code embed the producer's absolute cache dir. They are
left as they are: on an FX-graph hit Inductor writes the graph's code again under its current
cache dir and loads it from there, so a dir copied to another path hits (measured with torch
2.11 on an H100 and 2.13 on the CPU; tests/parts prove it on every run).
"""

from __future__ import annotations

import getpass
import os
import tempfile
from pathlib import Path

MARKERS = ("fxgraph", "aotautograd")


def locate(path: Path) -> tuple[Path, str] | None:
    """(base, mount) when ``path`` is an Inductor cache dir."""
    if any((path / m).is_dir() for m in MARKERS) or triton_roots(path):
        return path, ""
    return None


def triton_roots(base: Path) -> list[str]:
    try:
        return sorted(
            f"triton/{d.name}"
            for d in (base / "triton").iterdir()
            if d.is_dir() and not d.is_symlink() and d.name.isdigit()
        )
    except OSError:
        return []


def default_dest() -> Path:
    """Where the workload's Inductor looks: TORCHINDUCTOR_CACHE_DIR, else
    /tmp/torchinductor_$USER."""
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if env:
        return Path(env)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Path(tempfile.gettempdir()) / f"torchinductor_{user}"


def relocate(staged: Path, rel: str, old_root: str, new_root: Path) -> str | None:
    """Nothing to rewrite (see the module doc); never a reason to skip."""
    return None
