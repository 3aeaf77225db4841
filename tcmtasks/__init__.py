"""tcm: manage, ship, restore and track Triton kernel caches.

The public API is what this module exports; the CLI (``tcm``) and ``dodo.py`` are thin over it.
"""

from .cache.entries import Entry, EntryKind, FileInfo, FileKind, Problem, scan, scan_root
from .cache.health import Repair, diagnose, repair
from .cache.roots import Root, discover
from .errors import CacheError, TcmError, UsageError
from .index import Index, IndexStats, default_db_path
from .select import Criteria, select
from .targets import Target

__version__ = "0.1.0"

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
