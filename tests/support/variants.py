"""Turn real entries into the shapes other Triton versions and accidents leave on disk.

Every variant starts from an entry Triton really wrote (session fixture) and changes only what
docs/cache-formats.md ("Layout", "Metadata") say differs, so the reader is tested on real bytes, not
invented ones.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path


def kernel_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/__grp__*.json"))


def kernel_name(entry: Path) -> str:
    return next(entry.glob("__grp__*.json")).name[len("__grp__") : -len(".json")]


def rekey(entry: Path, new_key: str) -> Path:
    """Rename an entry dir and point its group at the new location."""
    new = entry.parent / new_key
    entry.rename(new)
    grp = next(new.glob("__grp__*.json"))
    data = json.loads(grp.read_text())
    data["child_paths"] = {c: str(new / c) for c in data["child_paths"]}
    grp.write_text(json.dumps(data))
    return new


def base64_key(base32_key: str) -> str:
    raw = base64.b32decode(base32_key + "=" * (-len(base32_key) % 8))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def hex_key(base32_key: str) -> str:
    return base64.b32decode(base32_key + "=" * (-len(base32_key) % 8)).hex()


def edit_metadata(entry: Path, fn) -> None:
    meta = entry / f"{kernel_name(entry)}.json"
    data = json.loads(meta.read_text())
    fn(data)
    meta.write_text(json.dumps(data))


def as_triton_32(entry: Path) -> Path:
    """What Triton 3.2 wrote: a base64 key, no triton_version, cluster_dims, no .source."""
    name = kernel_name(entry)

    def old(meta: dict) -> None:
        meta.pop("triton_version", None)
        meta.pop("arch", None)  # the top-level "sm90" arch appeared in 3.6
        meta["cluster_dims"] = [1, 1, 1]

    edit_metadata(entry, old)
    src = entry / f"{name}.source"
    if src.exists():
        src.unlink()
        grp = entry / f"__grp__{name}.json"
        data = json.loads(grp.read_text())
        data["child_paths"].pop(f"{name}.source", None)
        grp.write_text(json.dumps(data))
    return rekey(entry, base64_key(entry.name))


def age(path: Path, seconds: float) -> None:
    """Make a file or dir (and everything in it) ``seconds`` old."""
    import time

    when = time.time() - seconds
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (when, when), follow_symlinks=False)
