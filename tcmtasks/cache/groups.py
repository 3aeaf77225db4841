"""``__grp__<name>.json`` files: read them, judge them as Triton would, rewrite them atomically.

Triton's ``FileCacheManager.get_group`` keeps only the children whose absolute path exists and
counts a lookup as a hit only when ``<name>.json`` survives (docs/cache-formats.md, "Groups and the
hit rule"). Everything here mirrors that rule so that tcm's verdict and Triton's never disagree.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import commit, stage_text
from ..errors import GroupFormatError

GROUP_PREFIX = "__grp__"
#: Groups and metadata Triton writes are kilobytes; a file past this is not one, and is not
#: read into memory whole.
MAX_JSON = 16 << 20


def read_capped(path: str | Path, cap: int = MAX_JSON, *, dir_fd: int | None = None) -> bytes:
    """The file's bytes, or its first ``cap + 1`` when it is longer (the caller refuses it).

    Sized by ``fstat``, with the os calls themselves: ``open(path).read(cap + 1)`` allocates
    ``cap`` bytes up front and wraps the file twice, 16 us a file where this takes 7; at one
    group per kernel that was a quarter of packaging's time."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        want = min(os.fstat(fd).st_size, cap) + 1
        chunks: list[bytes] = []
        got = 0
        while got <= cap and (chunk := os.read(fd, min(want, cap + 1 - got))):
            chunks.append(chunk)
            got += len(chunk)
            if len(chunk) < want:
                break  # a regular file's read comes up short only at its end
            want = 1 << 16  # it grew since fstat
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def group_filename(name: str) -> str:
    return f"{GROUP_PREFIX}{name}.json"


def kernel_name_of_group(filename: str) -> str | None:
    """``__grp__add_kernel.json`` -> ``add_kernel``; None for any other file name."""
    if filename.startswith(GROUP_PREFIX) and filename.endswith(".json"):
        return filename[len(GROUP_PREFIX) : -len(".json")] or None
    return None


def _minor(version: str | None) -> tuple[int, int]:
    """(major, minor) of a Triton version; unknown (pre-3.3 metadata) counts as 3.2."""
    try:
        major, minor = (version or "3.2").split(".")[:2]
        return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)
    except ValueError:
        return (3, 2)


def strict_children(triton_version: str | None) -> bool:
    """From 3.8 ``get_group`` misses when ANY listed child is missing; before, it drops the
    missing ones and hits while ``<name>.json`` remains (read in 3.6.0, 3.7.0, 3.8.0, 3.9.0
    sources; docs/cache-formats.md, "Removing files" measured the 3.9.0 miss)."""
    return _minor(triton_version) >= (3, 8)


def corrupt_group_crashes(triton_version: str | None) -> bool:
    """Up to 3.6 an unparsable group raises out of ``get_group`` (the workload fails);
    from 3.7 it is caught and counted as a miss."""
    return _minor(triton_version) < (3, 7)


def read_group(
    path: str | Path, *, dir_fd: int | None = None, data: bytes | None = None
) -> dict[str, str]:
    """Return ``child_paths``; raise GroupFormatError for a file Triton could not use.
    ``data``: the file's bytes where the caller holds them (extract, which just wrote it)."""
    try:
        raw = read_capped(path, dir_fd=dir_fd) if data is None else data
        if len(raw) > MAX_JSON:
            raise GroupFormatError(f"over {MAX_JSON >> 20} MiB: not a group Triton wrote")
        data = json.loads(raw)
    except RecursionError:
        raise GroupFormatError("nested too deeply to be a group Triton wrote") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GroupFormatError(f"not valid JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise GroupFormatError("not a JSON object")
    children = data.get("child_paths")
    if not isinstance(children, dict):
        raise GroupFormatError("has no child_paths mapping of file name to path")
    for k, v in children.items():
        if type(k) is not str or type(v) is not str:
            raise GroupFormatError("has no child_paths mapping of file name to path")
    return children


def plain_name(child: str) -> bool:
    """A child a group may name: a file name in the entry dir, never a path out of it."""
    return bool(child) and "/" not in child and "\0" not in child and child not in (".", "..")


@dataclass
class GroupCheck:
    """What Triton would make of a group, and why."""

    #: "hit": resolves to this entry's own files; "foreign-hit": resolves, but through files
    #: outside the entry (an older copy still on disk); "miss": Triton recompiles; "broken":
    #: Triton takes it as a hit and fails loading it.
    lookup: str
    missing: list[str] = field(default_factory=list)  # listed children that exist nowhere
    foreign: list[str] = field(default_factory=list)  # children whose path is not in this entry
    unlisted_metadata: bool = False  # the group does not list <name>.json at all


def check_group(
    entry_dir: str | Path,
    name: str,
    children: dict[str, str],
    binary_suffixes: tuple[str, ...],
    triton_version: str | None = None,
    present: set[str] | None = None,
) -> GroupCheck:
    """Judge a group exactly as ``get_group`` + ``compile`` would, plus where paths point.

    A lookup that finds the metadata but not the binary (``.cubin``/``.hsaco``) is "broken":
    Triton takes it as a hit and then fails with a KeyError loading the kernel (3.6.0's
    ``CompiledKernel.__init__``), which is worse than a miss. ``present`` (the names in the
    entry dir, when the caller has listed it) saves a stat per child that lies inside the entry.
    """
    own = os.path.normpath(os.fspath(entry_dir))
    resolved: dict[str, str] = {}
    check = GroupCheck(lookup="miss")
    prefix = own + os.sep
    for child, path in children.items():
        if not plain_name(child):
            # a path for a name (``../../x``): whatever it reaches is not this entry's file
            check.foreign.append(child)
            exists = os.path.exists(path)
            if exists:
                resolved[child] = path
            else:
                check.missing.append(child)
            continue
        if path == prefix + child and present is not None:
            inside, exists = True, child in present
        else:
            mine = os.path.join(own, child)
            exists = os.path.exists(path)
            inside = os.path.isabs(path) and (
                os.path.normpath(path) == mine
                # the same file reached through a symlinked parent (/tmp -> /private/tmp)
                or (exists and os.path.exists(mine) and os.path.samefile(path, mine))
            )
        if not inside:
            check.foreign.append(child)
        if exists:
            resolved[child] = path
        else:
            check.missing.append(child)
    metadata = f"{name}.json"
    if metadata not in children:
        check.unlisted_metadata = True
    if check.missing and strict_children(triton_version):
        return check  # 3.8+: one missing child and the whole group is a miss
    if metadata in resolved:
        if not any(c.endswith(binary_suffixes) for c in resolved):
            check.lookup = "broken"
        else:
            check.lookup = "hit" if metadata not in check.foreign else "foreign-hit"
    return check


def relocated_children(entry_dir: str | Path, children: dict[str, str]) -> dict[str, str]:
    """Point every child at this entry's own copy; drop children the entry does not hold."""
    base = os.path.abspath(entry_dir)
    out: dict[str, str] = {}
    for child in children:
        if not plain_name(child):
            continue  # a child named like a path is never one of this entry's files
        own = os.path.join(base, child)
        if os.path.isfile(own):
            out[child] = own
    return out


def group_text(children: dict[str, str]) -> str:
    """A group file's content, as Triton's ``put_group`` writes it."""
    return json.dumps({"child_paths": children})


def write_group(entry_dir: Path, name: str, children: dict[str, str], *, sync: bool = True) -> Path:
    """Write a group atomically and durably, in the exact shape Triton writes (``put_group``).

    The old group's mtime is kept: an entry's age is the age of its files, and repairing or
    pruning a kernel must not make it look freshly used to ``--older-than`` or an LRU budget.
    ``sync=False`` is for a caller that syncs the whole batch itself before anyone can see it
    (extract: entries in a staging dir, one syncfs, then the renames that publish them).
    """
    staged = stage_group(entry_dir, name, children, sync=sync)
    commit_group(staged)
    return staged.path


@dataclass
class StagedGroup:
    """A rewritten group written beside the old one, waiting for ``commit_group``."""

    path: Path
    tmp: str
    times_ns: tuple[int, int] | None


def stage_group(
    entry_dir: Path, name: str, children: dict[str, str], *, sync: bool = False
) -> StagedGroup:
    path = Path(entry_dir) / group_filename(name)
    try:
        st = path.stat()
        times = (st.st_atime_ns, st.st_mtime_ns)
    except FileNotFoundError:
        times = None
    tmp = stage_text(path, group_text(children), sync=sync)
    return StagedGroup(path, tmp, times)


def commit_group(staged: StagedGroup) -> None:
    commit(staged.tmp, staged.path)
    if staged.times_ns is not None:
        os.utime(staged.path, ns=staged.times_ns)
