"""Cache health: what is wrong with entries, and the repairs that are always safe to make.

A repair never turns a hit into a miss: a group is rewritten only when the rewritten group
would make Triton hit on this entry's own files, and only leftovers of killed processes are
deleted. Anything else (corrupt metadata, a missing binary) is reported for the user to decide.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ..atomic import TMP_SUFFIX
from ..errors import GroupFormatError
from .entries import (
    BUSY_TMP_SECONDS,
    STALE_TMP_SECONDS,
    TMP_PREFIX,
    Entry,
    EntryKind,
    FileKind,
    binary_suffixes,
    scan_entry,
)
from .groups import (
    check_group,
    group_filename,
    read_group,
    relocated_children,
    write_group,
)
from .lock import locked

log = logging.getLogger(__name__)

#: Problems a group rewrite can cure.
GROUP_PROBLEMS = {"foreign-paths", "incomplete-group", "missing-group", "bad-group"}
_KERNEL_FILE_KINDS = {
    FileKind.METADATA,
    FileKind.IR,
    FileKind.ASM,
    FileKind.BINARY,
    FileKind.SOURCE,
}


@dataclass(frozen=True)
class Repair:
    key: str
    action: str  # "rewrote-group", "removed-tmp", "skipped"
    detail: str


def diagnose(entries: Iterable[Entry]) -> list[Entry]:
    """The entries that have problems."""
    return [e for e in entries if e.problems]


def repair(entry: Entry, *, now: float | None = None) -> list[Repair]:
    """Make the safe repairs on one entry, under its root's lock; return what was done (or
    why it was not)."""
    with locked(entry.root):
        return _repair(entry, time.time() if now is None else now)


def _repair(entry: Entry, now: float) -> list[Repair]:
    done: list[Repair] = []
    codes = {p.code for p in entry.problems}
    if "stale-tmp" in codes:
        done += _remove_stale_tmp(entry, now)
    if "tcm-leftover" in codes:
        done += _remove_tcm_leftovers(entry, now)
    if entry.kind == EntryKind.KERNEL and codes & GROUP_PROBLEMS and entry.name:
        done.append(_rewrite_group(entry))
    return done


def _remove_stale_tmp(entry: Entry, now: float) -> list[Repair]:
    out = []
    try:
        items = list(entry.path.iterdir())
    except OSError as exc:
        return [Repair(entry.key, "skipped", f"cannot list {entry.path}: {exc}")]
    for item in items:
        if not item.name.startswith(TMP_PREFIX) or not item.is_dir() or item.is_symlink():
            continue
        try:
            age = now - item.stat().st_mtime
            if age <= STALE_TMP_SECONDS:
                continue
            shutil.rmtree(item)
            out.append(Repair(entry.key, "removed-tmp", f"{item.name} ({age / 3600:.1f} h old)"))
        except OSError as exc:
            out.append(Repair(entry.key, "skipped", f"cannot remove {item.name}: {exc}"))
    return out


def _remove_tcm_leftovers(entry: Entry, now: float) -> list[Repair]:
    out = []
    for item in entry.path.glob(f"*{TMP_SUFFIX}"):
        try:
            if now - item.stat().st_mtime > BUSY_TMP_SECONDS:
                item.unlink()
                out.append(Repair(entry.key, "removed-leftover", item.name))
        except OSError as exc:
            out.append(Repair(entry.key, "skipped", f"cannot remove {item.name}: {exc}"))
    return out


def _rewrite_group(entry: Entry) -> Repair:
    """Point the group at this entry's own files; rebuild it from them if it is unreadable."""
    name = entry.name or ""
    path = entry.path
    try:
        children = read_group(path / group_filename(name))
        new = relocated_children(path, children)
        source = "relocated"
    except (FileNotFoundError, GroupFormatError):
        # Triton lists every file it wrote for the kernel; the files present are that list.
        new = relocated_children(
            path, {f.name: "" for f in entry.files if f.kind in _KERNEL_FILE_KINDS}
        )
        source = "rebuilt from the files present"
    except OSError as exc:
        return Repair(entry.key, "skipped", f"cannot read the group: {exc}")
    meta = new.get(f"{name}.json")
    if meta is None:
        return Repair(entry.key, "skipped", f"the entry has no {name}.json; remove it instead")
    try:
        json.loads((path / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return Repair(entry.key, "skipped", f"{name}.json is corrupt; remove the entry instead")
    if (
        check_group(path, name, new, binary_suffixes(entry.target), entry.triton_version).lookup
        != "hit"
    ):
        return Repair(
            entry.key,
            "skipped",
            "the entry lacks its binary; a rewritten group would not hit: remove the entry instead",
        )
    write_group(path, name, new)
    return Repair(entry.key, "rewrote-group", f"{source}: {len(new)} files under {path}")


def rescan(entry: Entry) -> Entry:
    """Read an entry again from disk (after a repair)."""
    return scan_entry(entry.root, entry.key)
