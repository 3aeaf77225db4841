"""The parts of a compile cache beyond Triton's entries: Inductor's and vLLM's artifacts.

A torch.compile start-up needs the whole Inductor cache (FX graphs, AOTAutograd entries,
generated code, autotune results), not only its Triton kernels (docs/cache-formats.md,
"torch.compile"); a vLLM start-up needs its compile cache. Each kind is one small module
(``inductor``, ``vllm``) saying how to recognise its dir, where its Triton roots are, where a
node's workload will look for it, and how to fix the absolute paths it stores. Everything else
(walking, units, shipping, installing) is common and lives here, so the next kind a user asks
for is one new module.

Triton's own entries are not a part: they keep their MCV-compatible place in the image
(``io.triton.cache/<KEY>/``), selectable per target; a part names the Triton roots inside it,
and each shipped entry records which of them it belongs to.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..cache.entries import TMP_PREFIX
from ..errors import UsageError
from . import inductor, vllm

#: The kinds, in the order they are recognised (a vLLM dir holds Inductor dirs: vLLM first).
KINDS: dict[str, ModuleType] = {"vllm": vllm, "inductor": inductor}

#: Never shipped: Inductor's lock files, Triton's and tcm's in-flight writes and leftovers.
TRANSIENT_DIRS = {"locks", "__pycache__"}
_TRANSIENT_FILE = re.compile(r"(^\.tcm-|\.tcm-tmp$|\.lock$|^tmp\.pid_)")
#: File and dir names a part may hold in an image: no '..', no separators, no hidden names.
SAFE_NAME = re.compile(r"[A-Za-z0-9_+=,@-][A-Za-z0-9_.+=,@-]{0,254}")
MAX_DEPTH = 12


@dataclass(frozen=True)
class PartFile:
    rel: str  # relative to the part's base, '/'-separated
    path: Path  # on the packing machine
    size: int


@dataclass
class Part:
    """One Inductor or vLLM cache dir being packaged."""

    kind: str
    base: Path  # absolute, on the packing machine
    mount: str = ""  # where ``base`` sits inside the kind's cache root ("" = the root itself)
    triton_roots: list[str] = field(default_factory=list)  # relative to base
    files: list[PartFile] = field(default_factory=list)
    #: GPU device name -> the units that GPU's processes look up (its keys hold the name);
    #: empty when the cache was not made for a named GPU (a CPU cache, an older warm)
    gpus: dict[str, list[str]] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return prefix_of(self.kind)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def units(self) -> list[str]:
        return sorted({unit_of(f.rel) for f in self.files})

    def describe(self) -> dict[str, Any]:
        """The part's row in the in-layer manifest (``gpus``: which GPU needs which unit)."""
        row = {
            "kind": self.kind,
            "prefix": self.prefix,
            "source": str(self.base),
            "mount": self.mount,
            "triton_roots": self.triton_roots,
            "files": len(self.files),
            "bytes": self.bytes,
            "units": len(self.units),
        }
        if self.gpus:
            row["gpus"] = self.gpus
        return row


def for_gpus(parts: list[Part], gpus: list[list[str]]) -> Part:
    """One part from caches of one kind warmed for different GPUs (a fleet warm: one dir per
    GPU), each unit once, ``gpus`` saying which GPUs need it. Units at one path hold the same
    bytes across GPUs (generated code is named by its content's hash, graphs by their key,
    which differs per GPU); a path with different bytes is refused, as the image could hold
    only one of them."""
    first = parts[0]
    if len(parts) == 1:
        first.gpus = {g: first.units for g in gpus[0]}
        return first
    where = ", ".join(str(p.base) for p in parts)
    named = [g for names in gpus for g in names]
    if not all(gpus) or len(set(named)) != len(named):
        raise UsageError(
            f"{len(parts)} {first.kind} caches in one image ({where}) that are not one per "
            "GPU: package each separately, or warm them as one fleet "
            "(tcm warm --gpu-profile A --gpu-profile B)"
        )
    if first.kind != "inductor" or any(p.mount != first.mount for p in parts):
        raise UsageError(
            f"{len(parts)} {first.kind} caches in one image ({where}): package each separately"
        )
    files: dict[str, PartFile] = {}
    by_gpu: dict[str, set[str]] = {}
    for part, names in zip(parts, gpus, strict=True):
        for f in part.files:
            seen = files.setdefault(f.rel, f)
            if seen is not f and not _same_bytes(seen, f):
                raise UsageError(
                    f"the {first.kind} caches for {', '.join(named)} hold different files at "
                    f"{f.rel} ({seen.path}, {f.path}): one image can ship one of them; "
                    "package each GPU's cache separately"
                )
        for g in names:
            by_gpu.setdefault(g, set()).update(part.units)
    return Part(
        first.kind,
        first.base,
        first.mount,
        sorted({r for p in parts for r in p.triton_roots}),
        sorted(files.values(), key=lambda f: f.rel),
        {g: sorted(units) for g, units in sorted(by_gpu.items())},
    )


def _same_bytes(a: PartFile, b: PartFile) -> bool:
    import filecmp

    return a.size == b.size and filecmp.cmp(a.path, b.path, shallow=False)


def prefix_of(kind: str) -> str:
    return f"io.{kind}.cache/"


def module(kind: str) -> ModuleType:
    if kind not in KINDS:
        raise UsageError(f"unknown cache part {kind!r}; tcm knows {', '.join(KINDS)}")
    return KINDS[kind]


def find_kind(path: Path) -> tuple[str, Path] | None:
    """(kind, base) when ``path`` is an Inductor or vLLM cache dir; cheaper than ``find``."""
    if not path.is_dir():
        return None
    path = Path(os.path.abspath(path))
    for kind, mod in KINDS.items():
        found = mod.locate(path)
        if found is not None:
            return kind, found[0]
    return None


def kind_of_unit(unit: str) -> str:
    """What a unit is, for listing and eviction (``EntryKind``)."""
    from ..cache.entries import EntryKind

    parts = unit.split("/")
    if "fxgraph" in parts[:-1]:
        return EntryKind.FX_GRAPH
    if "aotautograd" in parts[:-1]:
        return EntryKind.AOT_GRAPH
    if unit.endswith(".best_config"):
        return EntryKind.TUNING
    if unit.endswith((".py", ".cpp", ".so", ".h", ".cubin", ".hsaco", ".o")):
        return EntryKind.CODE
    return EntryKind.ARTIFACT


def scan_units(base: Path, kind: str) -> list[Any]:
    """The units of an Inductor or vLLM cache as index entries (key = the unit's path)."""
    from ..cache.entries import Entry, FileInfo

    mod = module(kind)
    by_unit: dict[str, list[tuple[str, int, float]]] = {}
    for f in walk(base, mod.triton_roots(base)):
        unit = unit_of(f.rel)
        try:
            mtime = f.path.stat().st_mtime
        except OSError:
            continue
        inner = f.rel[len(unit) + 1 :] if f.rel != unit else Path(f.rel).name
        by_unit.setdefault(unit, []).append((inner, f.size, mtime))
    out = []
    for unit, files in sorted(by_unit.items()):
        out.append(
            Entry(
                key=unit,
                root=base,
                kind=kind_of_unit(unit),
                name=unit.rsplit("/", 1)[-1],
                files=tuple(FileInfo(n, "other", s, m) for n, s, m in sorted(files)),
                mtime=max(m for _n, _s, m in files),
            )
        )
    return out


def find(path: Path) -> Part | None:
    """The part at ``path``: an Inductor or vLLM cache dir (or one of vLLM's hash or rank
    dirs); None for a plain Triton cache dir."""
    path = Path(os.path.abspath(path))
    for kind, mod in KINDS.items():
        found = mod.locate(path)
        if found is not None:
            base, mount = found
            roots = mod.triton_roots(base)
            return Part(kind, base, mount, roots, walk(base, roots))
    return None


def walk(base: Path, exclude: list[str]) -> list[PartFile]:
    """Every regular file under ``base`` but the excluded dirs (its Triton roots, shipped as
    Triton entries) and transient ones; symlinks are never followed nor shipped."""
    skip = {os.path.normpath(base / e) for e in exclude}
    out: list[PartFile] = []
    for dirpath, dirs, names in os.walk(base):
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in TRANSIENT_DIRS
            and not d.startswith((TMP_PREFIX, ".tcm-"))
            and os.path.normpath(os.path.join(dirpath, d)) not in skip
            and not os.path.islink(os.path.join(dirpath, d))
        )
        for name in sorted(names):
            full = os.path.join(dirpath, name)
            if _TRANSIENT_FILE.search(name) or os.path.islink(full):
                continue
            try:
                st = os.stat(full, follow_symlinks=False)
            except OSError:
                continue
            rel = os.path.relpath(full, base).replace(os.sep, "/")
            out.append(PartFile(rel, Path(full), st.st_size))
    return out


def unit_of(rel: str) -> str:
    """What is installed (and removed) as one piece: a whole FX-graph entry
    (``fxgraph/<xx>/<key>``) or AOTAutograd entry (``aotautograd/<key>``), else the file."""
    parts = rel.split("/")
    for i, p in enumerate(parts):
        if p == "fxgraph" and len(parts) > i + 3:
            return "/".join(parts[: i + 3])
        if p == "aotautograd" and len(parts) > i + 2:
            return "/".join(parts[: i + 2])
    return rel


def check_rel(rel: str) -> bool:
    """A path inside a part that is safe to write: relative, no '..', plain names only."""
    parts = rel.split("/")
    return 0 < len(parts) <= MAX_DEPTH and all(SAFE_NAME.fullmatch(p) for p in parts)
