"""Shrinking a cache without breaking a hit: IR-only prune, whole-entry removal, dedup, budgets.

Every operation is a ``Plan`` first (what would go, how many bytes, and why), shown to the user
and applied only after confirmation; ``apply`` carries a plan out entry by entry, and one entry
failing (read-only dir, vanished, corrupt group) stops nothing else.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .cache.entries import PART_KINDS, Entry, EntryKind, FileKind, file_sha256
from .cache.lock import locked_all
from .cache.remove import busy, remove_entry, remove_files_many
from .errors import CacheError
from .targets import Target

#: Metadata fields that differ between identical compilations: the key itself, the Triton
#: version (part of the key) and install paths of bundled libraries (not part of the key).
NOT_OPTIONS = frozenset({"hash", "triton_version", "extern_libs"})


@dataclass
class Action:
    """One change to one entry: drop some of its files, or remove it whole."""

    entry: Entry
    kind: str  # "files" or "entry"
    bytes: int
    reason: str
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        e = self.entry
        return {
            "key": e.key, "root": str(e.root), "name": e.name,
            "target": str(e.target) if e.target else None, "action": self.kind,
            "files": list(self.files), "bytes": self.bytes, "reason": self.reason,
        }  # fmt: skip


@dataclass
class Plan:
    mode: str
    actions: list[Action] = field(default_factory=list)
    skipped: list[tuple[Entry, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(a.bytes for a in self.actions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "bytes": self.bytes, "entries": len(self.actions),
            "actions": [a.to_dict() for a in self.actions],
            "skipped": [{"key": e.key, "root": str(e.root), "reason": r} for e, r in self.skipped],
            "notes": self.notes,
        }  # fmt: skip


@dataclass
class Result:
    done: list[Action] = field(default_factory=list)
    failed: list[tuple[Action, str]] = field(default_factory=list)
    freed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "freed": self.freed, "done": len(self.done),
            "failed": [{**a.to_dict(), "error": msg} for a, msg in self.failed],
        }  # fmt: skip


# -- plans --------------------------------------------------------------------------------------


def plan_ir(
    entries: Iterable[Entry], *, ir: bool = True, asm: bool = False, source: bool = False
) -> Plan:
    """Drop IR (``.ttir .ttgir .llir``), optionally ``.ptx``/``.amdgcn`` and ``.source``: none
    of them is read to launch a cached kernel (docs/cache-formats.md, "Removing files")."""
    kinds = (
        ({FileKind.IR} if ir else set())
        | ({FileKind.ASM} if asm else set())
        | ({FileKind.SOURCE} if source else set())
    )
    plan = Plan("ir")
    for e in entries:
        drop = [f for f in e.files if f.kind in kinds]
        if not drop or e.kind != EntryKind.KERNEL:
            continue
        if e.lookup != "hit":
            plan.skipped.append((e, f"its lookup is '{e.lookup}', not a hit: run tcm doctor"))
            continue
        plan.actions.append(
            Action(
                e,
                "files",
                sum(f.size for f in drop),
                f"drop {', '.join(sorted({f.kind for f in drop}))} files",
                tuple(f.name for f in drop),
            )
        )
    return plan


def plan_full(entries: Iterable[Entry], *, now: float | None = None) -> Plan:
    plan = Plan("full")
    for e in entries:
        if why := busy(e, now):
            plan.skipped.append((e, f"not removed: {why}"))
            continue
        plan.actions.append(Action(e, "entry", e.size, "selected"))
    return plan


def binary_digest(e: Entry) -> str | None:
    """The sha256 of the entry's ``.cubin``/``.hsaco`` (of their sha256s, sorted by name, if
    it has several); None when it has none or one cannot be read. The index keeps each
    binary's hash from when the entry was last read (any change to an entry dir makes the
    next refresh read it again), so only entries indexed before tcm stored hashes are read."""
    binaries = sorted((f for f in e.files if f.kind == FileKind.BINARY), key=lambda f: f.name)
    if not binaries:
        return None
    digests = [f.sha256 or file_sha256(e.path / f.name) for f in binaries]
    if any(d is None for d in digests):
        return None
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(d or "" for d in digests).encode()).hexdigest()


def compile_options(e: Entry) -> str:
    meta = e.metadata or {}
    return json.dumps(
        {k: v for k, v in meta.items() if k not in NOT_OPTIONS}, sort_keys=True, default=str
    )


def plan_dedup(entries: Iterable[Entry], *, now: float | None = None) -> Plan:
    """Entries of one root with the same kernel name, target, binary bytes and compile options
    are duplicates (e.g. left by an older Triton build, whose keys differ): keep the newest.
    Entries of different roots, hence of different vLLM ranks, are never compared."""
    plan = Plan("dedup")
    groups: dict[tuple[str, str | None, Target, str, str], list[Entry]] = defaultdict(list)
    for e in entries:
        if e.kind != EntryKind.KERNEL or e.target is None or e.metadata is None:
            continue
        digest = binary_digest(e)
        if digest is None:
            continue
        groups[(str(e.root), e.name, e.target, digest, compile_options(e))].append(e)
    for (_, name, target, digest, _), members in groups.items():
        if len(members) < 2:
            continue
        members.sort(key=lambda e: (e.mtime, e.key), reverse=True)
        keep = members[0]
        for e in members[1:]:
            if why := busy(e, now):
                plan.skipped.append((e, f"duplicate of {keep.key}, not removed: {why}"))
                continue
            plan.actions.append(
                Action(
                    e,
                    "entry",
                    e.size,
                    f"duplicate of {keep.key} (newer): same {name} for {target}, binary sha256 "
                    f"{digest[:12]}, same options; Triton {e.triton_version or '?'} vs "
                    f"{keep.triton_version or '?'}",
                )
            )
    return plan


def plan_gc(
    entries: Iterable[Entry],
    *,
    max_size: int | None = None,
    max_age: float | None = None,
    last_used: Mapping[tuple[str, str], float] | None = None,
    now: float | None = None,
) -> Plan:
    """Bring the roots under a size and/or age budget, least recently used first.

    Last use is the tracked runtime stat when there is one (``last_used[(root, key)]``), else
    the entry's newest file. Kernels, autotune results and the units of Inductor's and vLLM's
    caches are evicted, each whole (a compiled graph never loses half its files): launcher
    modules are tiny and every launch needs them; in-flight writes are never touched.
    """
    now = time.time() if now is None else now
    last_used = last_used or {}
    all_entries = list(entries)
    plan = Plan("gc")

    def used(e: Entry) -> float:
        return last_used.get((str(e.root), e.key), e.mtime)

    evictable = []
    for e in all_entries:
        if e.kind not in (EntryKind.KERNEL, EntryKind.AUTOTUNE, *PART_KINDS):
            continue
        if why := busy(e, now):
            plan.skipped.append((e, f"kept: {why}"))
            continue
        evictable.append(e)
    evictable.sort(key=lambda e: (used(e), e.key))
    chosen: dict[int, Action] = {}
    if max_age is not None:
        for e in evictable:
            if now - used(e) > max_age:
                chosen[id(e)] = Action(
                    e, "entry", e.size, f"last used {(now - used(e)) / 86400:.1f} d ago"
                )
    if max_size is not None:
        total = sum(e.size for e in all_entries) - sum(a.bytes for a in chosen.values())
        for e in evictable:
            if total <= max_size:
                break
            if id(e) in chosen:
                continue
            chosen[id(e)] = Action(e, "entry", e.size, "least recently used over the size budget")
            total -= e.size
        if total > max_size:
            plan.notes.append(
                f"{total} bytes remain: the rest is not evictable (modules, writes in progress)"
            )
    plan.actions = sorted(chosen.values(), key=lambda a: (used(a.entry), a.entry.key))
    return plan


# -- applying -----------------------------------------------------------------------------------


#: Entries whose files are pruned per batch (one sync each); bounds what a crash leaves staged.
BATCH = 1000


def apply(plan: Plan, *, progress: Callable[[int, int], None] | None = None) -> Result:
    """Carry out a plan under the locks of its roots; each entry's failure is recorded and
    the rest goes on."""
    with locked_all({a.entry.root for a in plan.actions}):
        return _apply(plan, progress)


def _apply(plan: Plan, progress: Callable[[int, int], None] | None) -> Result:
    result = Result()
    done = 0
    whole = [a for a in plan.actions if a.kind == "entry"]
    files = [a for a in plan.actions if a.kind == "files"]
    for action in whole:
        try:
            remove_entry(action.entry)
            result.freed += action.bytes
            result.done.append(action)
        except CacheError as exc:
            result.failed.append((action, str(exc)))
        done += 1
        if progress:
            progress(done, len(plan.actions))
    for start in range(0, len(files), BATCH):
        batch = files[start : start + BATCH]
        outcomes = remove_files_many([(a.entry, set(a.files)) for a in batch])
        for action, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, CacheError):
                result.failed.append((action, str(outcome)))
            else:
                result.freed += outcome
                result.done.append(action)
        done += len(batch)
        if progress:
            progress(done, len(plan.actions))
    return result
