"""Whether an entry will hit for the node's workload: from its image row before anything is
staged (another target, Triton build, Python ABI, ptxas or AMD library path), and once staged
from its own files, judged where it will be installed (complete, its group listing its
metadata and a binary, rewritten with the paths of that place; docs/cache-formats.md, "Groups
and the hit rule"). The judgement is made from the bytes the stream held, not read back."""

from __future__ import annotations

import contextlib
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache.entries import Entry, EntryKind, FileInfo, Known, binary_suffixes, file_kind, scan_entry
from .cache.groups import group_filename, group_text, kernel_name_of_group, read_capped, read_group
from .errors import HostileImage
from .layerstream import SAFE_FILE
from .producer import Producer, hip_libdir, host_ptxas
from .targets import Target


def check_group_names(key: str, known: Known, staged: Path) -> None:
    """A group in an image names files of its entry, nothing else: one that names a path out
    of it (``../x``) makes the whole image hostile."""
    for name in [f.name for f in known.files if kernel_name_of_group(f.name) is not None]:
        try:
            children = known.groups[name] = read_group(staged / name, data=known.data.get(name))
        except (OSError, ValueError):
            continue  # judged per entry later: incomplete
        bad = [c for c in children if not SAFE_FILE.fullmatch(c)]
        if bad:
            raise HostileImage(
                f"the group of {key} names {bad[0]!r}, a path out of its entry: "
                "nothing was installed"
            )


@dataclass
class Judged:
    """An entry judged where it will be installed, with its group rewritten for that place
    (not yet written), or why it cannot hit there."""

    entry: Entry
    group: str  # its file name ("" when it has none)
    text: bytes | None  # the group's bytes with the final paths
    held: bool  # the image's group was held in memory, never written to the staging dir
    why_not: str | None


def judge_at(final_dir: Path, known: Known, staged: Path) -> Judged:
    """Judge a staged entry as it will be at ``final_dir``, from what the stream recorded of
    it (one reading of its JSON files, none from disk unless HOLD_BUDGET was spent)."""
    held_json = known.data
    if any(f.name.endswith(".json") and f.name not in held_json for f in known.files):
        known = Known(known.files, {**held_json, **read_json(staged, known)}, known.parsed,
                      known.groups)  # fmt: skip
    groups = [n for f in known.files if (n := kernel_name_of_group(f.name))]
    files = {f.name for f in known.files}
    name = next((n for n in groups if f"{n}.json" in files), groups[0] if groups else None)
    grp = group_filename(name) if name else ""
    held = grp in held_json
    children: dict[str, str] | None = None
    problem = "no group"
    if grp:
        try:
            children = known.groups.get(grp) or read_group(staged / grp, data=known.data.get(grp))
        except (OSError, ValueError) as exc:
            problem = str(exc)
    there, text, present = known, None, set()
    if children is not None:
        present = {c for c in children if SAFE_FILE.fullmatch(c) and c in files and c != grp}
        final = {c: f"{final_dir}/{c}" for c in sorted(present)}
        text = group_text(final).encode()
        there = Known([f for f in known.files if f.name != grp], {**known.data, grp: text},
                      known.parsed, {grp: final})  # fmt: skip
        there.files.append(FileInfo(grp, file_kind(grp), len(text), time.time()))
    entry = scan_entry(final_dir.parent, final_dir.name, known=there)
    why: str | None = None
    if entry.kind == EntryKind.MODULE:  # a driver helper: one .so, no group
        return Judged(entry, "", None, False, None)
    if entry.kind != EntryKind.KERNEL or not entry.name:
        why = f"not a kernel entry ({entry.kind})"
    elif entry.metadata is None:
        why = "incomplete: no readable metadata"
    elif children is None:
        why = f"incomplete: no usable group ({problem})"
    elif f"{entry.name}.json" not in present:
        why = "incomplete: the group does not list the metadata"
    elif not any(c.endswith(binary_suffixes(entry.target)) for c in present):
        why = "incomplete: no kernel binary"
    return Judged(entry, grp, text, held, why)


def read_json(staged: Path, known: Known) -> dict[str, bytes]:
    """The JSON files the stream wrote rather than held (HOLD_BUDGET spent), read back."""
    out = {}
    for f in known.files:
        if f.name.endswith(".json") and f.name not in known.data:
            with contextlib.suppress(OSError):  # unreadable: judged as missing
                out[f.name] = read_capped(staged / f.name)
    return out


#: Triton's C driver helpers (docs/cache-formats.md, "Driver helpers")
MODULE_NAMES = ("cuda_utils", "hip_utils", "__triton_launcher")


def is_module_row(row: dict[str, Any]) -> bool:
    return row.get("name") in MODULE_NAMES


def module_skip(files: list[str], host: Producer, force: bool = False) -> str | None:
    """Why a driver helper will not load for the workload: its file is ``<name><EXT_SUFFIX>``,
    and the workload's interpreter loads only its own ABI's and this machine's (its key, from
    the C source and the platform, says nothing of the Python)."""
    so = next((f for f in files if f.endswith(".so")), None)
    if force or so is None or host.python is None:
        return None
    abi = f"cpython-{host.python[2:]}-"
    if abi not in so:
        return f"a C helper built for another Python ({so}); the workload runs {host.python}"
    machine = platform.machine()
    if machine and machine not in so:
        return f"a C helper built for another machine ({so}); this node is {machine}"
    return None


def why_skip(
    target: Target | None,
    version: str | None,
    targets: list[Target] | None,
    host: Producer,
    build: dict[str, str] | None = None,
    force: bool = False,
) -> str | None:
    """Why an entry cannot hit for the workload's runtime ``host``: another target; another
    Triton version, Python ABI, Triton build or ptxas than the one its key was computed with
    (docs/cache-formats.md, "The key"). ``force`` keeps everything of a wanted target."""
    if targets is not None and target not in targets:
        return f"target {target or 'unknown'} is not one of {', '.join(map(str, targets))}"
    if force:
        return None
    build = build or {}
    if host.triton_version and version and version != host.triton_version:
        return f"built by Triton {version}; the workload runs {host.triton_version} (a miss)"
    py, key, ptxas = build.get("python"), build.get("triton_key"), build.get("ptxas")
    if host.python and py and py != host.python:
        return f"built by Triton {version or '?'} {py}; the workload runs {host.python} (a miss)"
    if host.triton_key and key and key != host.triton_key:
        return (
            f"built by another Triton build (triton_key {key}); the workload's is "
            f"{host.triton_key} (a miss)"
        )
    usable = host_ptxas(host)
    if target and target.backend == "cuda" and usable and ptxas and ptxas not in usable:
        return f"compiled with ptxas {ptxas}; the workload uses {' or '.join(usable)} (a miss)"
    built_at, here = build.get("hip_libdir"), hip_libdir(host)
    if (
        target
        and target.backend == "hip"
        and host.hip_paths_in_key is not False  # the workload's Triton says (None: unknown)
        and built_at
        and here
        and built_at != here
    ):
        return (
            f"compiled with Triton's AMD libraries at {built_at}, the workload's are at {here}: "
            "HIP keys hold that path (a miss; warm where Triton sits at the workload's path)"
        )
    return None
