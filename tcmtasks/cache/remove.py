"""Removing entries and files so that a concurrent Triton process never sees half of either.

A whole entry is first renamed into ``<root>/.tcm-trash/`` (one atomic rename: Triton sees the
entry or nothing) and deleted from there. Files inside an entry go after the group has been
rewritten without them, so a lookup in between finds a smaller, complete group. A crash leaves
either the whole entry, or a trash dir that the next prune purges and the index never lists.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import stat
import time
from pathlib import Path

from ..errors import CacheError, GroupFormatError
from .entries import TMP_PREFIX, Entry, binary_suffixes
from .groups import (
    StagedGroup,
    check_group,
    commit_group,
    group_filename,
    read_group,
    relocated_children,
    stage_group,
)

TRASH = ".tcm-trash"
#: Seconds between rewriting a group and deleting the files it no longer lists. A Triton that
#: read the old group just before the rewrite loads every file it listed right after (all of
#: them, IR included, in ``CompiledKernel``); deleting at once made that load fail.
UNLINK_GRACE = 1.0
#: An entry with a file this young may still be being written by Triton: leave it alone.
BUSY_SECONDS = 60.0
_seq = itertools.count()


def busy(entry: Entry, now: float | None = None) -> str | None:
    """Why an entry must not be touched now (a write in progress), or None."""
    now = time.time() if now is None else now
    try:
        names = os.listdir(entry.path)
    except NotADirectoryError:
        names = []  # a one-file unit of an Inductor or vLLM cache
    except FileNotFoundError:
        return "it is gone"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror})"
    for name in names:
        if name.startswith(TMP_PREFIX):
            try:
                if now - os.stat(entry.path / name).st_mtime < 3600:
                    return f"Triton is writing it ({name})"
            except OSError:
                continue
    if now - entry.mtime < BUSY_SECONDS:
        return f"it was written {now - entry.mtime:.0f} s ago and may still be in progress"
    return None


def trash_dir(root: Path, *, create: bool = False) -> Path | None:
    """``<root>/.tcm-trash``, made on demand; None if there is none. Something else at that
    name (a symlink planted there, a file) is not tcm's trash: it is never followed, emptied
    or moved into."""
    trash = Path(root) / TRASH
    try:
        st = os.lstat(trash)
    except FileNotFoundError:
        if not create:
            return None
        try:
            os.mkdir(trash, 0o755)
        except FileExistsError:
            return trash_dir(root, create=create)
        return trash
    if not stat.S_ISDIR(st.st_mode):
        raise CacheError(
            f"{trash} is {'a symbolic link' if stat.S_ISLNK(st.st_mode) else 'not a directory'}"
            ", not tcm's trash: tcm never follows it; remove it and run this again"
        )
    return trash


def remove_entry(entry: Entry) -> None:
    """Move the entry out of Triton's sight in one rename, then delete it. (A unit of an
    Inductor or vLLM cache, a dir or a file whose key is a relative path, goes the same way.)"""
    trash = trash_dir(entry.root, create=True)
    assert trash is not None
    try:
        dest = trash / f"{entry.key.replace('/', '%')}.{os.getpid()}.{next(_seq)}"
        os.rename(entry.path, dest)
    except FileNotFoundError:
        raise CacheError(f"{entry.path} is gone (removed by someone else?)") from None
    except OSError as exc:
        raise CacheError(
            f"cannot remove {entry.path}: {exc.strerror or exc}; check the permissions of "
            f"{entry.root}"
        ) from None
    if dest.is_dir():
        shutil.rmtree(dest, ignore_errors=True)
    else:
        dest.unlink(missing_ok=True)


def purge_trash(root: Path) -> int:
    """Delete what an interrupted removal left in the trash; return how many were there."""
    trash = trash_dir(root)
    if trash is None:
        return 0
    try:
        items = list(trash.iterdir())
    except FileNotFoundError:
        return 0
    for item in items:
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        trash.rmdir()
    return len(items)


def remove_files_many(work: list[tuple[Entry, set[str]]]) -> list[int | CacheError]:
    """Drop files from kernel entries: rewrite each group without them, then unlink them.

    An entry is refused (its CacheError returned in its place, nothing changed) when the
    rewritten group would not be a hit on the entry's own files, so pruning can never turn a
    hit into a miss. New groups are staged for all entries, made durable with one ``sync``,
    then renamed into place one by one, and only then are the files unlinked.
    """
    results: list[int | CacheError] = []
    staged: list[tuple[int, StagedGroup]] = []
    for i, (entry, names) in enumerate(work):
        try:
            staged.append((i, _stage_without(entry, names)))
            results.append(0)
        except CacheError as exc:
            results.append(exc)
    if staged and hasattr(os, "sync"):
        os.sync()
    committed: list[int] = []
    for i, group in staged:
        entry, _names = work[i]
        try:
            commit_group(group)
            committed.append(i)
        except OSError as exc:
            results[i] = CacheError(f"{entry.key}: cannot rewrite its group ({exc.strerror})")
    if committed:  # the last group rewritten gets the whole grace; earlier ones more
        time.sleep(UNLINK_GRACE)
    for i in committed:
        entry, names = work[i]
        freed = 0
        for f in entry.files:
            if f.name in names:
                try:
                    os.unlink(entry.path / f.name)
                    freed += f.size
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    results[i] = CacheError(
                        f"{entry.key}: cannot delete {f.name} ({exc.strerror}); the group no "
                        "longer lists it, so Triton is unaffected"
                    )
                    break
        else:
            results[i] = freed
    return results


def _stage_without(entry: Entry, names: set[str]) -> StagedGroup:
    name = entry.name or ""
    path = entry.path
    try:
        children = read_group(path / group_filename(name))
    except FileNotFoundError:
        raise CacheError(
            f"{entry.key}: it has no group file (or is gone); run tcm doctor"
        ) from None
    except GroupFormatError as exc:
        raise CacheError(f"{entry.key}: its group is {exc}; run tcm doctor --fix") from None
    except OSError as exc:
        raise CacheError(f"{entry.key}: cannot read its group ({exc.strerror})") from None
    kept = relocated_children(path, {c: p for c, p in children.items() if c not in names})
    check = check_group(path, name, kept, binary_suffixes(entry.target), entry.triton_version)
    if check.lookup != "hit":
        raise CacheError(f"{entry.key}: without those files the group would not hit; left as is")
    try:
        return stage_group(path, name, kept)
    except OSError as exc:
        raise CacheError(f"{entry.key}: cannot rewrite its group ({exc.strerror})") from None
