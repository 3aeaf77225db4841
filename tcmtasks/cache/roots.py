"""Find Triton cache roots: Triton's own, Inductor's ``triton/<device>/`` and vLLM's rank dirs.

A "root" is a directory whose children are cache entries. Users point tcm at what they know
(``~/.cache/vllm``, ``/tmp/torchinductor_me``); ``expand`` turns that into the roots inside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..fleet import member_dirs
from ..parts import find_kind, inductor, vllm
from .entries import TMP_PREFIX, key_format


@dataclass(frozen=True)
class Root:
    """A cache root and where it came from; ``group`` keeps vLLM ranks apart (never deduped)."""

    path: Path
    origin: str  # "explicit", "TRITON_CACHE_DIR", "TRITON_HOME", "default", "inductor", "vllm"
    group: str = ""  # e.g. "rank_0_0" for a vLLM rank, "0" for an Inductor device
    #: "triton" (its children are Triton entries), or "inductor"/"vllm": the rest of that
    #: cache (FX graphs, AOTAutograd entries, generated code...), indexed as units
    kind: str = "triton"

    def __str__(self) -> str:
        return str(self.path)


def _looks_like_root(path: Path, sample: int = 64) -> bool:
    """True when some children are named like Triton keys (or the dir is empty)."""
    try:
        with os.scandir(path) as it:
            seen = 0
            for item in it:
                seen += 1
                if item.is_dir(follow_symlinks=False) and key_format(item.name) != "other":
                    return True
                if seen >= sample:
                    break
            return seen == 0
    except OSError:
        return False


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def inductor_roots(inductor_dir: Path) -> list[Root]:
    """``<inductor>/triton/<device>/`` (Inductor points Triton there, docs/cache-formats.md,
    "torch.compile")."""
    return [
        Root(d, "inductor", d.name)
        for d in _subdirs(inductor_dir / "triton")
        if not d.name.startswith(TMP_PREFIX)
    ]


def vllm_roots(vllm_dir: Path) -> list[Root]:
    """``torch_compile_cache/<hash>/rank_<r>_<dp>/{triton_cache, inductor_cache/triton/*}``."""
    base = (
        vllm_dir / "torch_compile_cache"
        if (vllm_dir / "torch_compile_cache").is_dir()
        else vllm_dir
    )
    found: list[Root] = []
    for hashdir in _subdirs(base):
        for rank in _subdirs(hashdir):
            if not rank.name.startswith("rank_"):
                continue
            group = f"{hashdir.name}/{rank.name}"
            if (rank / "triton_cache").is_dir():
                found.append(Root(rank / "triton_cache", "vllm", group))
            for dev in _subdirs(rank / "inductor_cache" / "triton"):
                found.append(Root(dev, "vllm", f"{group}/inductor/{dev.name}"))
    return found


def expand(path: Path, origin: str = "explicit") -> list[Root]:
    """The roots at or under ``path``: itself if it holds entries, else the Inductor or vLLM
    layouts inside it; the path itself when nothing else matches (a new, empty cache)."""
    path = Path(path).expanduser()
    if not path.is_dir() or _looks_like_root(path):
        return [Root(path, origin)]
    if (path / "triton").is_dir():
        roots = inductor_roots(path)
        if roots:
            return roots
    roots = vllm_roots(path)
    if roots:
        return roots
    return [Root(path, origin)]


def discover(paths: list[Path] | None = None) -> list[Root]:
    """Roots to work on: the given paths (expanded), else every default location that exists.

    Defaults, in Triton's own order: ``TRITON_CACHE_DIR``; ``$TRITON_HOME/.triton/cache``;
    ``~/.triton/cache``; then Inductor's and vLLM's caches.
    """
    if paths:
        # a fleet dir stands for its members' caches
        paths = [m for p in paths for m in member_dirs(Path(p).expanduser())]
        roots = [r for p in paths for r in expand(Path(p))]
        roots += [r for p in paths if (r := part_root(Path(p))) is not None]
    else:
        roots = []
        if os.environ.get("TRITON_CACHE_DIR"):
            roots.append(Root(Path(os.environ["TRITON_CACHE_DIR"]), "TRITON_CACHE_DIR"))
        if os.environ.get("TRITON_HOME"):
            roots.append(Root(Path(os.environ["TRITON_HOME"]) / ".triton" / "cache", "TRITON_HOME"))
        roots.append(Root(Path.home() / ".triton" / "cache", "default"))
        roots += inductor_roots(inductor.default_dest())
        roots += vllm_roots(vllm.default_dest())
        for d in (inductor.default_dest(), vllm.default_dest()):
            if (r := part_root(d)) is not None:
                roots.append(r)
        roots = [r for r in roots if r.path.is_dir()]
    unique: dict[tuple[str, str], Root] = {}
    for r in roots:
        unique.setdefault(
            (os.path.abspath(r.path), r.kind),
            Root(Path(os.path.abspath(r.path)), r.origin, r.group, r.kind),
        )
    return list(unique.values())


def part_root(path: Path) -> Root | None:
    """The root of an Inductor or vLLM cache's own artifacts at ``path``, if it is one."""
    found = find_kind(Path(path).expanduser())
    if found is None:
        return None
    kind, base = found
    return Root(Path(os.path.abspath(base)), kind, "", kind)
