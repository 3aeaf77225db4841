"""tcm: manage, ship, restore and track Triton kernel caches.

The public API is what this module exports; the CLI (``tcm``) and ``dodo.py`` are thin over it.
Everything here needs only the standard library except the index (sqlite-utils), which loads
on first use (PEP 562): ``tcmtasks.track`` is imported by Triton inside every tracked process,
possibly from a Python environment that has nothing but Triton.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cache.entries import Entry, EntryKind, FileInfo, FileKind, Problem, scan, scan_root
from .cache.health import Repair, diagnose, repair
from .cache.roots import Root, discover
from .errors import CacheError, TcmError, UsageError
from .select import Criteria, select
from .targets import Target
from .track import TrackStats, TritonCacheTracker

__version__ = "0.1.0"

_LAZY = {"Index", "IndexStats", "default_db_path"}

__all__ = [
    "CacheError",
    "Criteria",
    "Entry",
    "EntryKind",
    "FileInfo",
    "FileKind",
    "Index",
    "IndexStats",
    "Problem",
    "Repair",
    "Root",
    "Target",
    "TcmError",
    "TrackStats",
    "TritonCacheTracker",
    "UsageError",
    "__version__",
    "default_db_path",
    "diagnose",
    "discover",
    "repair",
    "scan",
    "scan_root",
    "select",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import index

        return getattr(index, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .index import Index, IndexStats, default_db_path
