"""Selection criteria shared by list, prune, package and extract: name, target, version, age."""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from .cache.entries import Entry, EntryFields, EntryKind
from .errors import UsageError
from .targets import normalize_arch, normalize_backend

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

SORT_KEYS = {
    "name": lambda e: (e.name or "", e.key),
    "key": lambda e: e.key,
    "size": lambda e: (e.size, e.key),
    "age": lambda e: (-e.mtime, e.key),  # youngest first
    "mtime": lambda e: (e.mtime, e.key),  # oldest first
    "backend": lambda e: (e.target.backend if e.target else "", e.name or "", e.key),
    "arch": lambda e: (e.target.arch if e.target else "", e.name or "", e.key),
    "version": lambda e: (e.triton_version or "", e.name or "", e.key),
    "hits": lambda e: (e.hits, e.key),
    "used": lambda e: (e.last_used or 0.0, e.key),  # least recently used first
}


_NAME = "COALESCE(e.name, '')"
#: SORT_KEYS as SQL terms over ``entries e``, giving the same order (UTF-8 compared bytewise
#: orders as Python compares str), so a listing streams from the index without sorting in
#: memory; tests/test_selection.py compares the two for every key, both directions.
SQL_SORT = {
    "name": [_NAME, "e.key"],
    "key": ["e.key"],
    "size": ["COALESCE(e.size, 0)", "e.key"],
    "age": ["-COALESCE(e.mtime, 0)", "e.key"],
    "mtime": ["COALESCE(e.mtime, 0)", "e.key"],
    "backend": ["COALESCE(e.backend, '')", _NAME, "e.key"],
    "arch": ["CASE WHEN COALESCE(e.backend, '') = '' THEN '' ELSE COALESCE(e.arch, '') END",
             _NAME, "e.key"],
    "version": ["COALESCE(e.triton_version, '')", _NAME, "e.key"],
    "hits": ["COALESCE(e.hits, 0)", "e.key"],
    "used": ["COALESCE(e.last_used, 0.0)", "e.key"],
}  # fmt: skip


def sort_key(sort: str) -> tuple[str, bool]:
    """``-name`` -> ("name", reversed); an unknown key is a usage error."""
    key = sort.lstrip("-")
    if key not in SORT_KEYS:
        raise UsageError(f"unknown sort key {key!r}; use one of: {', '.join(SORT_KEYS)}")
    return key, sort.startswith("-")


def sql_order(sort: str | None) -> list[str]:
    """ORDER BY terms for a sort; ties stay in root, key order as in ``select``."""
    if not sort:
        return []
    key, reverse = sort_key(sort)
    return [t + (" DESC" if reverse else "") for t in SQL_SORT[key]]


def parse_age(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``3d``, ``1w`` (or a sum like ``1d12h``) -> seconds."""
    s = text.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", s)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhdw])", "", s).strip():
        raise UsageError(f"bad age {text!r}; write a number and a unit (s m h d w), e.g. 12h, 7d")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_size(text: str) -> int:
    """``512``, ``10K``, ``1.5G``, ``200MiB`` -> bytes (powers of 1024, as ``du -h`` shows)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise UsageError(f"bad size {text!r}; write e.g. 500M, 2G, 1.5GiB")
    mult = 1024 ** " kmgt".index(m.group(2) or " ")
    return int(float(m.group(1)) * mult)


def _version_matches(pattern: str, version: str | None) -> bool:
    if pattern == "unknown":
        return version is None
    if version is None:
        return False
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(version, pattern)
    # "3.6" selects 3.6.0, 3.6.1...; "3.6.0" only itself
    return version == pattern or version.startswith(pattern + ".")


@dataclass
class Criteria:
    """Which entries an action applies to. Empty lists mean "any"; values within one list are
    alternatives (OR), different fields must all hold (AND)."""

    names: list[str] = field(default_factory=list)
    backends: list[str] = field(default_factory=list)
    archs: list[str] = field(default_factory=list)
    triton_versions: list[str] = field(default_factory=list)
    older_than: float | None = None  # seconds
    younger_than: float | None = None
    kinds: list[str] = field(default_factory=lambda: [EntryKind.KERNEL])
    min_hits: int | None = None  # tracked hits (tcm track), inclusive bounds
    max_hits: int | None = None

    def __post_init__(self) -> None:
        self.backends = [normalize_backend(b) for b in self.backends]
        self.archs = [normalize_arch(a) for a in self.archs]

    def matches(self, e: Entry | EntryFields, now: float | None = None) -> bool:
        if self.kinds and e.kind not in self.kinds:
            return False
        if self.names and not any(
            fnmatch.fnmatchcase(e.name or "", n) if any(c in n for c in "*?[") else e.name == n
            for n in self.names
        ):
            return False
        if self.backends and (e.target is None or e.target.backend not in self.backends):
            return False
        if self.archs and (e.target is None or e.target.arch not in self.archs):
            return False
        if self.triton_versions and not any(
            _version_matches(v, e.triton_version) for v in self.triton_versions
        ):
            return False
        if self.min_hits is not None and e.hits < self.min_hits:
            return False
        if self.max_hits is not None and e.hits > self.max_hits:
            return False
        age = (time.time() if now is None else now) - e.mtime
        if self.older_than is not None and age <= self.older_than:
            return False
        return not (self.younger_than is not None and age >= self.younger_than)


def select(
    entries: Iterable[Entry],
    criteria: Criteria,
    *,
    sort: str | None = None,
    now: float | None = None,
) -> list[Entry]:
    """Entries that match, optionally sorted by one of SORT_KEYS (``-name`` reverses)."""
    now = time.time() if now is None else now
    out = [e for e in entries if criteria.matches(e, now)]
    if sort:
        key, reverse = sort_key(sort)
        out.sort(key=SORT_KEYS[key], reverse=reverse)
    return out
