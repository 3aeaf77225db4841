"""Operations on caches in place: index, list, show, doctor, prune, dedup, gc.

Those that change a cache hold the lock of every root they touch from planning to the
re-index after applying, so what was planned is what is applied.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from .. import track as tracking
from ..cache.entries import Entry, EntryKind, scan_root
from ..cache.health import Repair, diagnose, repair, rescan
from ..cache.lock import locked_all
from ..cache.remove import purge_trash
from ..cache.roots import Root
from ..errors import UsageError
from ..index import Index, IndexStats, RebuildResult
from ..index import rebuild as rebuild_index
from ..progress import Progress, counter
from ..prune import Plan, Result, apply, plan_dedup, plan_full, plan_gc, plan_ir
from ..selection import Criteria, parse_age, parse_size, select, sql_order
from ._common import DbPath, log, open_index, refresh, roots_for

#: Asked before a change is applied, with the plan; False leaves everything as it is.
Confirm = Callable[[Plan], bool]


def kernels_only(criteria: Criteria | None) -> Criteria:
    return dataclasses.replace(criteria or Criteria(), kinds=[EntryKind.KERNEL])


def _roots_dict(roots: list[Root]) -> list[dict[str, str]]:
    return [
        {"path": str(r.path), "origin": r.origin, "group": r.group, "kind": r.kind} for r in roots
    ]


# -- index, list, show ---------------------------------------------------------------------------


@dataclass
class IndexResult:
    stats: IndexStats
    db: Path
    entries: int  # in the whole index after the update
    roots: list[Root]
    tracked: int  # entries whose tracked hits/misses were merged from the spool
    rebuilt: RebuildResult | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            **self.stats.__dict__,
            "db": str(self.db),
            "entries": self.entries,
            "roots": _roots_dict(self.roots),
            "tracked": self.tracked,
        }
        if self.rebuilt is not None:
            out["rebuilt"] = {k: str(v) if k == "backup" else v
                              for k, v in self.rebuilt.__dict__.items()}  # fmt: skip
        return out


def index(
    cache_dirs: list[Path] | None = None,
    *,
    rescan: bool = False,
    rebuild: bool = False,
    db: DbPath = None,
    progress: Progress | None = None,
) -> IndexResult:
    """Bring the index in line with the caches on disk (incremental unless ``rescan``), and
    merge the hits and misses that processes tracked by environment variable spooled.
    ``rebuild`` first moves a damaged index aside and starts a new one with the tracked hits
    it can still read."""
    rebuilt = rebuild_index(db) if rebuild else None
    with open_index(db) as idx:
        roots = roots_for(idx, cache_dirs, remembered=True)
        stats = refresh(idx, roots, progress, rescan=rescan)
        spooled, taken = tracking.take_spool(tracking.track_dir())
        tracked = idx.record_usage(spooled) if spooled.kernels else 0
        tracking.done_with(taken)  # only now: a kill before this loses nothing
        return IndexResult(stats, idx.path, idx.count(), roots, tracked, rebuilt)


@dataclass
class ListResult:
    entries: list[Entry]  # the chosen ones, sorted
    total: int  # entries in the roots before filtering
    roots: list[Root]
    now: float

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)


T = TypeVar("T")


@dataclass
class Listing(Generic[T]):
    """A listing as it is read: ``entries`` yields one entry (or its JSON) at a time, already
    filtered and sorted by the index, so printing 100,000 rows takes no more memory than
    printing ten."""

    entries: Iterator[T]
    total: int  # entries in the roots before filtering
    roots: list[Root]
    now: float


@contextlib.contextmanager
def stream_entries(
    cache_dirs: list[Path] | None = None,
    *,
    criteria: Criteria | None = None,
    sort: str = "name",
    refresh_index: bool = True,
    with_metadata: bool = False,
    with_files: bool = True,
    db: DbPath = None,
    progress: Progress | None = None,
) -> Iterator[Listing[Entry]]:
    """``list_entries`` as a stream (the index stays open until the block ends). Without
    ``with_files`` entries carry their indexed size and file count but no file list."""
    crit = criteria if criteria is not None else Criteria(kinds=[EntryKind.KERNEL])
    order = sql_order(sort)
    with open_index(db) as idx:
        roots, paths = _listed_roots(idx, cache_dirs, refresh_index, progress)
        now = time.time()
        rows = idx.iter_entries(
            paths, with_metadata=with_metadata, with_files=with_files, order=order
        )
        try:
            yield Listing((e for e in rows if crit.matches(e, now)), idx.count(paths), roots, now)
        finally:
            rows.close()


@contextlib.contextmanager
def stream_json(
    cache_dirs: list[Path] | None = None,
    *,
    criteria: Criteria | None = None,
    sort: str = "name",
    refresh_index: bool = True,
    db: DbPath = None,
    progress: Progress | None = None,
) -> Iterator[Listing[str]]:
    """``stream_entries`` as each entry's ``to_dict(files=False)`` JSON text, made by SQLite
    (what ``tcm list --json`` prints: 3x faster than building entries)."""
    crit = criteria if criteria is not None else Criteria(kinds=[EntryKind.KERNEL])
    order = sql_order(sort)
    rest = dataclasses.replace(crit, kinds=[])  # the kinds are filtered in SQL
    everything = rest == Criteria(kinds=[])
    with open_index(db) as idx:
        roots, paths = _listed_roots(idx, cache_dirs, refresh_index, progress)
        now = time.time()
        rows = idx.iter_entry_json(paths, kinds=crit.kinds, order=order, fields=not everything)
        try:
            texts = (
                (text for _, text in rows)
                if everything
                else (text for fields, text in rows if fields and rest.matches(fields, now))
            )
            yield Listing(texts, idx.count(paths), roots, now)
        finally:
            rows.close()


def _listed_roots(
    idx: Index, cache_dirs: list[Path] | None, refresh_index: bool, progress: Progress | None
) -> tuple[list[Root], list[Path]]:
    roots = roots_for(idx, cache_dirs, remembered=True)
    if refresh_index:
        refresh(idx, roots, progress)
    return roots, [r.path for r in roots]


def list_entries(
    cache_dirs: list[Path] | None = None,
    *,
    criteria: Criteria | None = None,
    sort: str = "name",
    refresh_index: bool = True,
    with_metadata: bool = False,
    db: DbPath = None,
    progress: Progress | None = None,
) -> ListResult:
    """Entries of the caches, filtered by ``criteria`` (kernels by default) and sorted."""
    with stream_entries(
        cache_dirs, criteria=criteria, sort=sort, refresh_index=refresh_index,
        with_metadata=with_metadata, db=db, progress=progress,
    ) as listing:  # fmt: skip
        return ListResult(list(listing.entries), listing.total, listing.roots, listing.now)


def show(key: str, cache_dirs: list[Path] | None = None, *, db: DbPath = None) -> Entry:
    """The one entry whose key is ``key`` or starts with it, with its metadata."""
    with open_index(db) as idx:
        roots = roots_for(idx, cache_dirs, remembered=True)
        refresh(idx, roots, None)
        found = idx.entries([r.path for r in roots], keys=[key], with_metadata=True)
    if not found:
        raise UsageError(
            f"no entry with key {key!r} in {', '.join(str(r) for r in roots)}; "
            "tcm list shows the keys"
        )
    if len(found) > 1:
        keys = ", ".join(f"{e.key} ({e.root})" for e in found[:5])
        raise UsageError(
            f"{key!r} matches {len(found)} entries ({keys}); give more of the key or --cache-dir"
        )
    return found[0]


# -- doctor -------------------------------------------------------------------------------------


@dataclass
class DoctorResult:
    roots: list[Root]
    checked: int
    sick: list[Entry]  # entries with problems (after repairs, when fixing)
    repairs: list[Repair] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.sick

    @property
    def errors(self) -> int:
        return sum(1 for e in self.sick if any(p.severity == "error" for p in e.problems))

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "roots": [str(r.path) for r in self.roots],
            "entries": [e.to_dict(files=False) for e in self.sick],
            "repairs": [r.__dict__ for r in self.repairs],
        }


def doctor(
    cache_dirs: list[Path] | None = None,
    *,
    fix: bool = False,
    db: DbPath = None,
    progress: Progress | None = None,
) -> DoctorResult:
    """Check every entry on disk; with ``fix``, make the repairs that cannot turn a hit into
    a miss (see ``cache.health``) and check again."""
    with open_index(db) as idx:
        roots = roots_for(idx, cache_dirs, remembered=not fix)
        entries = [e for r in roots if r.kind == "triton" for e in scan_root(r.path)]
        sick = diagnose(entries)
        repairs: list[Repair] = []
        if fix:
            with locked_all(r.path for r in roots):
                for e in sick:
                    repairs += repair(e)
                sick = diagnose(rescan(e) for e in sick)
                refresh(idx, roots, progress)
    return DoctorResult(roots, len(entries), sick, repairs)


# -- prune, dedup, gc ---------------------------------------------------------------------------


@dataclass
class ChangeResult:
    """A planned change to caches, and what became of it."""

    roots: list[Root]
    plan: Plan
    dry_run: bool
    applied: Result | None = None  # None: dry run, nothing to do, or declined
    declined: bool = False

    @property
    def failed(self) -> bool:
        return bool(self.applied and self.applied.failed)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.plan.to_dict(), "dry_run": self.dry_run}
        out["roots"] = [str(r.path) for r in self.roots]
        if self.applied is not None:
            out["result"] = self.applied.to_dict()
        if self.declined:
            out["declined"] = True
        return out


def _change(
    cache_dirs: list[Path] | None,
    make_plan: Callable[[list[Entry]], Plan],
    *,
    dry_run: bool,
    confirm: Confirm | None,
    db: DbPath,
    progress: Progress | None,
    needs_metadata: bool = False,
) -> ChangeResult:
    """Lock the roots, plan on a freshly refreshed index, confirm, apply, re-index."""
    with open_index(db) as idx:
        roots = roots_for(idx, cache_dirs, remembered=False)
        with locked_all(r.path for r in roots):
            for r in roots:
                if n := purge_trash(r.path):
                    log.info("purged %d leftovers of an interrupted removal in %s", n, r.path)
            refresh(idx, roots, progress)
            entries = idx.entries([r.path for r in roots], with_metadata=needs_metadata)
            plan = make_plan(entries)
            result = ChangeResult(roots, plan, dry_run)
            if dry_run or not plan.actions:
                return result
            if confirm is not None and not confirm(plan):
                result.declined = True
                return result
            result.applied = apply(plan, progress=counter(progress, "removing"))
            refresh(idx, roots, progress)
    return result


def prune(
    cache_dirs: list[Path] | None = None,
    *,
    criteria: Criteria | None = None,
    full: bool = False,
    ir: bool = True,
    asm: bool = False,
    source: bool = False,
    include_recent: bool = False,
    dry_run: bool = False,
    confirm: Confirm | None = None,
    db: DbPath = None,
    progress: Progress | None = None,
) -> ChangeResult:
    """Drop files no cached launch reads (IR by default; ``asm``, ``source`` add more) from
    the selected kernels, rewriting each group first; or with ``full`` remove whole entries.

    ``include_recent`` also acts on entries written in the last minute, which are otherwise
    left alone as possibly still being written: only for a cache no process writes to (a
    pipeline's private copy)."""
    if full and (asm or source or not ir):
        raise UsageError("--asm and --source belong to the IR mode (no --full)")
    if not (full or ir or asm or source):
        raise UsageError("nothing to prune: ir, asm and source are all off")
    criteria = kernels_only(criteria)
    now = float("inf") if include_recent else None

    def make_plan(entries: list[Entry]) -> Plan:
        chosen = select(entries, criteria)
        if full:
            return plan_full(chosen, now=now)
        return plan_ir(chosen, ir=ir, asm=asm, source=source)

    return _change(
        cache_dirs, make_plan, dry_run=dry_run, confirm=confirm, db=db, progress=progress
    )


def dedup(
    cache_dirs: list[Path] | None = None,
    *,
    criteria: Criteria | None = None,
    include_recent: bool = False,
    dry_run: bool = False,
    confirm: Confirm | None = None,
    db: DbPath = None,
    progress: Progress | None = None,
) -> ChangeResult:
    """Remove duplicates: the same kernel, target, binary and options in one root (left by
    another Triton build, whose keys differ); the newest of each set is kept."""
    criteria = kernels_only(criteria)
    now = float("inf") if include_recent else None

    def make_plan(entries: list[Entry]) -> Plan:
        return plan_dedup(select(entries, criteria), now=now)

    return _change(
        cache_dirs,
        make_plan,
        dry_run=dry_run,
        confirm=confirm,
        db=db,
        progress=progress,
        needs_metadata=True,  # compile options come from metadata
    )


def gc(
    cache_dirs: list[Path] | None = None,
    *,
    max_size: int | str | None = None,
    max_age: float | str | None = None,
    dry_run: bool = False,
    confirm: Confirm | None = None,
    db: DbPath = None,
    progress: Progress | None = None,
) -> ChangeResult:
    """Bring the caches under a size (bytes, or ``"2G"``) and/or age (seconds, or ``"30d"``)
    budget, least recently used first: tracked use where ``tcm track`` saw it, else the
    newest file. Launcher modules and writes in progress are never removed."""
    if max_size is None and max_age is None:
        raise UsageError("give --max-size and/or --max-age")
    size = parse_size(max_size) if isinstance(max_size, str) else max_size
    age = parse_age(max_age) if isinstance(max_age, str) else max_age
    with open_index(db) as idx:
        tracked = idx.last_used()

    def make_plan(entries: list[Entry]) -> Plan:
        return plan_gc(entries, max_size=size, max_age=age, last_used=tracked)

    return _change(
        cache_dirs, make_plan, dry_run=dry_run, confirm=confirm, db=db, progress=progress
    )
