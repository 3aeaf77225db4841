"""tcm: manage, ship, restore and track Triton kernel caches.

The public API is what this module exports; the CLI (``tcm``) and ``dodo.py`` are thin over it.
Exports load on first use (PEP 562): ``tcmtasks.track`` is imported by Triton inside every
tracked process, and must cost it no more than its own few standard-library imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CacheError": "errors",
    "Criteria": "selection",
    "Entry": "cache.entries",
    "EntryKind": "cache.entries",
    "FileInfo": "cache.entries",
    "FileKind": "cache.entries",
    "Index": "index",
    "IndexStats": "index",
    "Problem": "cache.entries",
    "Repair": "cache.health",
    "Root": "cache.roots",
    "SignOptions": "trust",
    "Target": "targets",
    "TcmError": "errors",
    "TrackStats": "track",
    "TritonCacheTracker": "track",
    "TrustOptions": "trust",
    "UsageError": "errors",
    "default_db_path": "index",
    "diagnose": "cache.health",
    "discover": "cache.roots",
    "repair": "cache.health",
    "scan": "cache.entries",
    "scan_root": "cache.entries",
    "select": "selection",
}

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
    "SignOptions",
    "Target",
    "TcmError",
    "TrackStats",
    "TritonCacheTracker",
    "TrustOptions",
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
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .cache.entries import Entry, EntryKind, FileInfo, FileKind, Problem, scan, scan_root
    from .cache.health import Repair, diagnose, repair
    from .cache.roots import Root, discover
    from .errors import CacheError, TcmError, UsageError
    from .index import Index, IndexStats, default_db_path
    from .selection import Criteria, select
    from .targets import Target
    from .track import TrackStats, TritonCacheTracker
    from .trust import SignOptions, TrustOptions
