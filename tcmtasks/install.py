"""Finishing what a restore staged for its place and putting it there: a part's units with
their paths fixed and their dirs made (all before any is installed), the bytes a restore may
write, and the one rename (or swap, with ``--overwrite``) that installs each entry or unit.
Nothing arrives but by rename, so a killed restore leaves every destination as it was."""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import parts as cache_parts
from .atomic import exchange
from .cache.entries import Entry
from .cache.remove import trash_dir
from .errors import DiskFull, HostileImage, ImageError, os_error
from .restoreplan import PartPlan
from .safedirs import check_dirs, make_dirs


@dataclass
class Budget:
    """The bytes a restore may still write: an entry copied for several roots (a vLLM rank
    each) counts once per copy, so ``dests`` cannot multiply a small layer past the caps."""

    limit: int
    spent: int

    def spend(self, size: int, what: str) -> None:
        self.spent += size
        if self.spent > self.limit:
            raise HostileImage(
                f"the layer unpacks to more than {self.limit} bytes with {what} copied for "
                "each place the manifest names (what the image declares, or --max-size): "
                "nothing was installed"
            )


@dataclass
class Ready:
    """A staged entry, finished for its place, waiting for the sync and its rename."""

    item: dict[str, Any]
    staged: Path
    final: Path
    size: int
    entry: Entry  # as judged at ``final``


@dataclass
class Unit:
    """A part's unit, its paths fixed and its dir made, waiting for its rename."""

    plan: PartPlan
    name: str
    staged: Path
    final: Path
    trash: Path
    size: int


def prepare_part(plan: PartPlan, staged: Path, overwrite: bool) -> list[Unit]:
    """Fix each staged unit's paths and make (and check) the dir it goes to. A unit whose
    paths cannot be fixed stops the whole restore here, before anything is installed."""
    mod = cache_parts.module(plan.kind)
    units: dict[str, list[str]] = {}
    for rel in _files_under(staged):
        units.setdefault(cache_parts.unit_of(rel), []).append(rel)
    old_root, new_root = producer_root(plan.source, plan.mount), kind_root(plan)
    moved = os.path.normpath(old_root) != os.path.normpath(new_root)
    ready = []
    for unit, rels in sorted(units.items()):
        final = plan.dest / unit
        if occupied(final) and not overwrite:
            plan.existing += 1
            continue
        reasons = [mod.relocate(staged / rel, rel, old_root, new_root) for rel in rels if moved]
        why = next((r for r in reasons if r is not None), None)
        if why is not None:
            raise ImageError(
                f"the {plan.kind} part's {unit} cannot be installed at {plan.dest}: {why}; "
                "nothing was installed"
            )
        check_dirs(new_root, os.path.relpath(final.parent, new_root))
        size = sum((staged / r).stat().st_size for r in rels)
        ready.append(Unit(plan, unit, staged / unit, final, staged.parent, size))
    for u in ready:  # every level checked first: made only when none is a link
        make_dirs(new_root, os.path.relpath(u.final.parent, new_root))
    return ready


def kind_root(plan: PartPlan) -> Path:
    """The node's cache root of a part's kind (its dest minus the mount)."""
    dest = plan.dest
    for _ in plan.mount.strip("/").split("/") if plan.mount else []:
        dest = dest.parent
    return dest


def _files_under(root: Path) -> Iterator[str]:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            yield os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")


def producer_root(source: str, mount: str) -> str:
    """The producer's cache root for a part: its dir minus where it sat inside the root."""
    if not source or not os.path.isabs(source):
        return ""
    if mount:
        tail = "/" + mount.strip("/")
        return source[: -len(tail)] if source.endswith(tail) else ""
    return source


def install(
    staged: Path, final: Path, overwrite: bool, trash: Path | None = None, *, absent: bool = False
) -> str | None:
    """One rename puts the entry in place; why it could not, or None. An entry it replaces is
    swapped out in the same step (``exchange``), so a crash leaves the old or the new entry,
    never neither; where the file system cannot swap, the old one goes aside into the trash
    (``<root>/.tcm-trash``, or the staging dir for parts' units) and comes back if the new one
    cannot follow it. ``absent``: the caller listed the root under its lock without ``final``
    there, so it is not looked at again (a dir a workload made since is one of Triton's empty
    ones, which the rename replaces; a full one makes the rename fail, as below)."""
    if not absent and occupied(final):
        if not overwrite:
            return "already there"
        if exchange(staged, final):
            _remove(staged)  # now the old one
            return None
        trash = trash if trash is not None else trash_dir(final.parent, create=True)
        assert trash is not None
        old = trash / f"{final.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        os.rename(final, old)
        try:
            os.rename(staged, final)
        except OSError as exc:
            os.rename(old, final)  # put the old one back
            return f"not installed ({exc.strerror or exc}); the entry there was kept"
        _remove(old)
        return None
    try:
        # rename() replaces an empty dir (Triton leaves one per missed lookup) in one step
        os.rename(staged, final)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return "another process installed it meanwhile; that one was kept"
        err = os_error(exc, "install", final)
        if isinstance(err, DiskFull):
            raise err from None
        return f"not installed: {err}"
    return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def occupied(path: Path) -> bool:
    try:
        return any(path.iterdir())
    except NotADirectoryError:
        return True
    except FileNotFoundError:
        return False
    except OSError:
        return path.exists()
