"""What several operations share: opening the index, choosing roots, refreshing."""

from __future__ import annotations

import logging
from pathlib import Path

from ..cache.roots import Root, discover
from ..errors import CacheError
from ..index import Index, IndexStats
from ..progress import Progress, counter

log = logging.getLogger("tcm")

#: An index refresh smaller than this is not worth a progress bar.
PROGRESS_MIN = 512

DbPath = Path | str | None


def open_index(db: DbPath) -> Index:
    """The index at ``db``; None means ``$TCM_DB`` or ``~/.local/share/tcm/index.db``."""
    return Index(db)


def explicit_roots(cache_dirs: list[Path]) -> list[Root]:
    roots = discover([Path(p) for p in cache_dirs])
    for r in roots:
        if not r.path.exists():
            raise CacheError(f"cache dir {r.path} does not exist")
        if not r.path.is_dir():
            raise CacheError(f"{r.path} is not a directory; give a cache dir")
    return roots


def roots_for(index: Index, cache_dirs: list[Path] | None, *, remembered: bool) -> list[Root]:
    """The roots an operation works on: the given dirs; else the caches found now at the
    default locations, plus, for reading (``remembered``), every root indexed before that
    still exists (one that vanished is dropped from the index). An operation that changes
    caches never acts on a root only the index remembers: that dir may since have become
    something else."""
    if cache_dirs:
        return explicit_roots(cache_dirs)
    found: dict[Path, Root] = {}
    if remembered:
        for r in index.roots():
            if r.path.is_dir():
                found[r.path] = r
            else:
                n = index.forget(r.path)
                log.warning(
                    "cache dir %s is gone; dropped its %d entries from the index", r.path, n
                )
    for r in discover(None):
        found.setdefault(r.path, r)
    if not found:
        raise CacheError(
            "no Triton cache found (looked at TRITON_CACHE_DIR, TRITON_HOME, "
            "~/.triton/cache, Inductor's and vLLM's caches); pass --cache-dir DIR"
        )
    return list(found.values())


def refresh(
    index: Index, roots: list[Root], progress: Progress | None, *, rescan: bool = False
) -> IndexStats:
    update = counter(progress, "indexing")
    if update is None:
        return index.update(roots, rescan=rescan)

    def gated(done: int, total: int) -> None:
        if total >= PROGRESS_MIN:
            update(done, total)

    return index.update(roots, rescan=rescan, progress=gated)
