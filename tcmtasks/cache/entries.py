"""Scan a Triton cache root into ``Entry`` records, tolerating every layout Triton 3.2-3.9 writes.

One directory under a root is one entry. Most are compiled kernels, but a root also holds
launcher/utils modules, autotune results, in-flight writes and the empty dirs Triton creates on
every lookup; these are recognised and reported as what they are, never mistaken for kernels.
Nothing here raises for a bad entry: what is wrong goes into ``Entry.problems``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..atomic import TMP_SUFFIX
from ..errors import CacheError, GroupFormatError
from ..targets import Target
from .groups import (
    GROUP_PREFIX,
    MAX_JSON,
    check_group,
    corrupt_group_crashes,
    kernel_name_of_group,
    read_capped,
    read_group,
)

log = logging.getLogger(__name__)

IR_SUFFIXES = (".ttir", ".ttgir", ".llir")
ASM_SUFFIXES = (".ptx", ".amdgcn")
BINARY_SUFFIXES = (".cubin", ".hsaco")
_BINARY_BY_BACKEND = {"cuda": (".cubin",), "hip": (".hsaco",)}
TMP_PREFIX = "tmp.pid_"
#: An in-flight dir older than this is a leftover of a killed process, not a write in progress.
STALE_TMP_SECONDS = 3600.0
#: A staged file of tcm's younger than this may belong to a run in progress.
BUSY_TMP_SECONDS = 60.0
#: A dir changed this recently may change again within the same mtime tick: do not trust it.
RACY_SECONDS = 2.0

_KEY_FORMATS = (
    ("base32", re.compile(r"[A-Z2-7]{52}")),  # Triton 3.3+
    ("base64", re.compile(r"[A-Za-z0-9_-]{43}")),  # Triton 3.2 (URL-safe, unpadded)
    ("hex", re.compile(r"[0-9a-f]{64}")),  # older
)


class FileKind:
    METADATA = "metadata"
    GROUP = "group"
    IR = "ir"
    ASM = "asm"
    BINARY = "binary"
    SOURCE = "source"
    MODULE = "module"
    AUTOTUNE = "autotune"
    OTHER = "other"


class EntryKind:
    KERNEL = "kernel"  # a compiled kernel (or what is left of one)
    MODULE = "module"  # launcher / cuda_utils / hip_utils extension modules
    AUTOTUNE = "autotune"  # <fn>.autotune.json results
    IN_FLIGHT = "in-flight"  # only tmp.pid_* dirs: a write in progress or a killed one
    EMPTY = "empty"  # Triton creates the key dir on every lookup, even a miss
    UNKNOWN = "unknown"  # unreadable, a symlink, or content tcm does not recognise
    # units of an Inductor or vLLM cache (tcmtasks.parts): each kept or removed whole
    FX_GRAPH = "fx-graph"  # fxgraph/<xx>/<key>/: a compiled graph
    AOT_GRAPH = "aot-graph"  # aotautograd/<key>/: an AOTAutograd entry
    CODE = "code"  # generated .py / .cpp / .so (Inductor writes them again on a hit)
    TUNING = "tuning"  # *.best_config: autotune results
    ARTIFACT = "artifact"  # anything else a part holds (vLLM's vllm_compile_cache.py...)


#: Kinds that belong to Inductor's and vLLM's caches rather than to a Triton root.
PART_KINDS = (
    EntryKind.FX_GRAPH,
    EntryKind.AOT_GRAPH,
    EntryKind.CODE,
    EntryKind.TUNING,
    EntryKind.ARTIFACT,
)


@dataclass(frozen=True)
class Problem:
    """Something wrong with an entry, phrased for the user, with what tcm or they can do."""

    code: str
    message: str
    severity: str = "error"  # "error": breaks a hit or the workload; "warning": worth a look


@dataclass(frozen=True)
class EntryFields:
    """What ``Criteria.matches`` reads of an entry, without the rest of it."""

    kind: str
    name: str | None
    target: Target | None
    triton_version: str | None
    hits: int
    mtime: float


class FileInfo(NamedTuple):
    """One file of an entry. A named tuple, not a frozen dataclass: an index read makes ~8 per
    entry, and a frozen dataclass's __init__ took a third of reading 20,000 entries."""

    name: str
    kind: str
    size: int
    mtime: float
    #: a binary's content hash, as indexed (None: not hashed, or not a binary)
    sha256: str | None = None


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    """The file's sha256, or None when it cannot be read (the entry is then not comparable)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


@dataclass
class Entry:
    """One directory of a cache root, as read from disk (or from the index)."""

    key: str
    root: Path
    kind: str
    key_format: str = "other"
    name: str | None = None
    target: Target | None = None
    triton_version: str | None = None
    num_warps: int | None = None
    num_stages: int | None = None
    num_ctas: int | None = None
    shared: int | None = None
    files: tuple[FileInfo, ...] = ()
    #: newest mtime of the entry's files (its age), not the directory's own mtime
    mtime: float = 0.0
    metadata: dict[str, Any] | None = None
    #: what a Triton lookup would do for a kernel: "hit", "foreign-hit" (reads another copy's
    #: files), "miss" or "broken" (found, then fails to load); "" for other kinds
    lookup: str = ""
    problems: tuple[Problem, ...] = ()
    #: cheap change detector for incremental indexing (see ``dir_fingerprint``)
    fingerprint: str = ""
    #: runtime use recorded by ``tcm track`` (only entries read from the index carry these)
    hits: int = 0
    misses: int = 0
    last_used: float | None = None
    metadata_text: str | None = field(default=None, repr=False, compare=False)
    #: size and file count as indexed, for an entry read without its files (a listing)
    indexed_size: int | None = field(default=None, repr=False, compare=False)
    indexed_file_count: int | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> Path:
        return self.root / self.key

    @property
    def size(self) -> int:
        if self.indexed_size is not None and not self.files:
            return self.indexed_size
        return sum(f.size for f in self.files)

    @property
    def file_count(self) -> int:
        if self.indexed_file_count is not None and not self.files:
            return self.indexed_file_count
        return len(self.files)

    def files_of(self, *kinds: str) -> list[FileInfo]:
        return [f for f in self.files if f.kind in kinds]

    def to_dict(self, *, files: bool = True, metadata: bool = False) -> dict[str, Any]:
        """A JSON-ready view (the ``--json`` output of read commands)."""
        t = self.target
        out: dict[str, Any] = {
            "key": self.key, "root": str(self.root),
            "path": os.path.join(self.root, self.key), "kind": self.kind,
            "key_format": self.key_format, "name": self.name, "target": str(t) if t else None,
            "backend": t.backend if t else None, "arch": t.arch if t else None,
            "warp_size": t.warp_size if t else None, "triton_version": self.triton_version,
            "num_warps": self.num_warps, "num_stages": self.num_stages,
            "num_ctas": self.num_ctas, "shared": self.shared, "size": self.size,
            "file_count": self.file_count, "mtime": self.mtime, "lookup": self.lookup or None,
            "problems": [p.__dict__ for p in self.problems],
            "hits": self.hits,
            "misses": self.misses,
            "last_used": self.last_used,
        }  # fmt: skip
        if files:
            out["files"] = [f._asdict() for f in self.files]
        if metadata:
            out["metadata"] = self.metadata
        return out


def binary_suffixes(target: Target | None) -> tuple[str, ...]:
    """The binary Triton loads for a target: ``.cubin`` (CUDA), ``.hsaco`` (HIP), else either."""
    return _BINARY_BY_BACKEND.get(target.backend, BINARY_SUFFIXES) if target else BINARY_SUFFIXES


def key_format(name: str) -> str:
    for fmt, pattern in _KEY_FORMATS:
        if pattern.fullmatch(name):
            return fmt
    return "other"


@functools.lru_cache(maxsize=4096)  # kernel names recur across keys; an extract asks per file
def file_kind(name: str) -> str:
    if name.startswith(GROUP_PREFIX) and name.endswith(".json"):
        return FileKind.GROUP
    if name.endswith(".autotune.json"):
        return FileKind.AUTOTUNE
    if name.endswith(".json"):
        return FileKind.METADATA
    if name.endswith(IR_SUFFIXES):
        return FileKind.IR
    if name.endswith(ASM_SUFFIXES):
        return FileKind.ASM
    if name.endswith(BINARY_SUFFIXES):
        return FileKind.BINARY
    if name.endswith(".source"):
        return FileKind.SOURCE
    if name.endswith(".so"):
        return FileKind.MODULE
    return FileKind.OTHER


def safe_name(name: str) -> str:
    """A name as valid UTF-8 text: undecodable bytes (surrogate escapes) become ``\\xNN``."""
    if name.isascii():  # every name Triton writes; skips the encode on the hot path
        return name
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def dir_fingerprint(st: os.stat_result, now: float | None = None) -> str:
    """Inode + mtime + ctime of an entry dir: any file added, removed or renamed in it changes
    the mtime, and Triton and tcm only ever write by renaming into the dir. A dir changed in the
    last RACY_SECONDS gets an empty fingerprint, so the next index run re-reads it (the same
    mtime tick could hide a second change, as in git's "racy" index entries)."""
    now = time.time() if now is None else now
    if now - st.st_mtime < RACY_SECONDS:
        return ""
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def iter_dirs(root: Path) -> Iterator[tuple[str, os.stat_result | None, str | None]]:
    """Yield ``(name, lstat, error)`` for each top-level item of a root that could be an entry."""
    try:
        it = os.scandir(root)
    except FileNotFoundError:
        raise CacheError(f"cache dir {root} does not exist") from None
    except NotADirectoryError:
        raise CacheError(f"cache dir {root} is not a directory") from None
    except PermissionError:
        raise CacheError(f"cache dir {root} is not readable (permission denied)") from None
    with it:
        for item in it:
            if item.name.startswith(".tcm"):  # tcm's own lock file and trash dir
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except OSError as exc:
                yield item.name, None, exc.strerror or str(exc)
                continue
            if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
                yield item.name, st, None
            else:
                log.debug("skipping %s/%s: not a directory", root, safe_name(item.name))


def scan_root(root: Path, *, now: float | None = None) -> Iterator[Entry]:
    """Every entry of one root, in directory order."""
    root = Path(root)
    now = time.time() if now is None else now
    for name, st, error in iter_dirs(root):
        yield scan_entry(root, name, st, error=error, now=now)


def scan(roots: Iterable[Path], *, now: float | None = None) -> list[Entry]:
    """Every entry of several roots."""
    return [e for root in roots for e in scan_root(Path(root), now=now)]


@dataclass
class Known:
    """What a caller already holds of an entry dir it has just written (extract): its files
    and the bytes of its JSON files, so that judging the entry reads nothing from disk. Its
    fingerprint stays empty: the next index refresh reads the dir itself."""

    files: list[FileInfo]
    data: dict[str, bytes]  # file name -> bytes, for the files ending in .json
    #: metadata file name -> (parsed, text), filled by the first judgement, shared by copies
    parsed: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    #: group file name -> its child_paths, as read from ``data`` (each group parsed once)
    groups: dict[str, dict[str, str]] = field(default_factory=dict)


def scan_entry(
    root: Path,
    dirname: str,
    st: os.stat_result | None = None,
    *,
    error: str | None = None,
    now: float | None = None,
    known: Known | None = None,
) -> Entry:
    """Read one entry dir. Never raises for what is inside it; problems are recorded."""
    now = time.time() if now is None else now
    if known is not None:
        return _judge(Entry(key=dirname, root=root, kind=EntryKind.UNKNOWN,
                            key_format=key_format(dirname)),
                      os.path.join(root, dirname), sorted(known.files),
                      {f.name: f.name for f in known.files}, [], [], now, known)  # fmt: skip
    key = safe_name(dirname)
    entry = Entry(key=key, root=root, kind=EntryKind.UNKNOWN, key_format=key_format(key))
    problems: list[Problem] = []
    if key != dirname:
        problems.append(
            Problem(
                "bad-name",
                f"directory name is not valid UTF-8 ({key}); Triton never "
                "writes such names, so this is not a cache entry",
                "warning",
            )
        )
    path = os.path.join(root, dirname)  # str, not Path: this loop runs 20,000 times
    if st is None and error is None:
        try:
            st = os.lstat(path)
        except OSError as exc:
            error = exc.strerror or str(exc)
    if error is not None or st is None:
        entry.problems = (*problems, Problem("unreadable", f"cannot stat {path}: {error}"))
        return entry
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        entry.problems = (
            *problems,
            Problem(
                "symlink",
                f"entry is a symlink to {safe_name(target)}; Triton never writes "
                "links and tcm does not follow them",
                "warning",
            ),
        )
        return entry
    entry.fingerprint = dir_fingerprint(st, now)
    try:
        items = list(os.scandir(path))
    except OSError as exc:
        entry.problems = (
            *problems,
            Problem(
                "unreadable",
                f"cannot list {path}: {exc.strerror or exc}; fix its permissions or remove it",
            ),
        )
        return entry

    files: list[FileInfo] = []
    real_names: dict[str, str] = {}  # safe name -> name on disk
    tmp_dirs: list[tuple[str, float]] = []
    for item in items:
        name = safe_name(item.name)
        try:
            ist = item.stat(follow_symlinks=False)
        except OSError as exc:
            problems.append(Problem("unreadable", f"cannot stat {name}: {exc.strerror or exc}"))
            continue
        if name != item.name:
            problems.append(Problem("bad-name", f"file name is not valid UTF-8: {name}", "warning"))
        if stat.S_ISDIR(ist.st_mode):
            if item.name.startswith(TMP_PREFIX):
                tmp_dirs.append((name, ist.st_mtime))
            else:
                problems.append(
                    Problem("unexpected-dir", f"unexpected subdirectory {name}", "warning")
                )
            continue
        if item.name.endswith(TMP_SUFFIX):  # a staged group of tcm's, not yet renamed in
            if now - ist.st_mtime > BUSY_TMP_SECONDS:
                problems.append(
                    Problem(
                        "tcm-leftover",
                        f"{name} was left by an interrupted tcm run; the entry is unaffected: "
                        "tcm doctor --fix removes it",
                        "warning",
                    )
                )
            continue
        if stat.S_ISLNK(ist.st_mode):
            problems.append(
                Problem("symlink", f"{name} is a symlink; Triton writes regular files", "warning")
            )
        elif not stat.S_ISREG(ist.st_mode):
            problems.append(Problem("special-file", f"{name} is not a regular file", "warning"))
            continue
        files.append(FileInfo(name, file_kind(name), ist.st_size, ist.st_mtime))
        real_names[name] = item.name
    files.sort(key=lambda f: f.name)
    return _judge(entry, path, files, real_names, tmp_dirs, problems, now, None, st.st_mtime)


def _judge(
    entry: Entry,
    path: str,
    files: list[FileInfo],
    real_names: dict[str, str],
    tmp_dirs: list[tuple[str, float]],
    problems: list[Problem],
    now: float,
    known: Known | None,
    dir_mtime: float = 0.0,
) -> Entry:
    """An entry's kind, kernel, target and problems, from its files (sorted by name) and,
    where ``known`` holds them, its JSON files' bytes."""
    entry.files = tuple(files)
    entry.mtime = max((f.mtime for f in files), default=dir_mtime)

    for name, mtime in tmp_dirs:
        if now - mtime > STALE_TMP_SECONDS:
            age_h = (now - mtime) / 3600
            problems.append(
                Problem(
                    "stale-tmp",
                    f"{name} is a write left by a killed process "
                    f"({age_h:.1f} h old); tcm doctor --fix removes it",
                    "warning",
                )
            )

    kinds = {f.kind for f in files}
    kernel_kinds = {
        FileKind.GROUP,
        FileKind.METADATA,
        FileKind.IR,
        FileKind.ASM,
        FileKind.BINARY,
        FileKind.SOURCE,
    }
    if kinds & kernel_kinds:
        entry.kind = EntryKind.KERNEL
        _read_kernel(entry, path, real_names, problems, known)
    elif FileKind.MODULE in kinds:
        entry.kind = EntryKind.MODULE
        entry.name = next(f.name for f in files if f.kind == FileKind.MODULE).split(".")[0]
    elif FileKind.AUTOTUNE in kinds:
        entry.kind = EntryKind.AUTOTUNE
        entry.name = next(f.name for f in files if f.kind == FileKind.AUTOTUNE)[
            : -len(".autotune.json")
        ]
    elif tmp_dirs and not files:
        entry.kind = EntryKind.IN_FLIGHT
    elif not files:
        entry.kind = EntryKind.EMPTY
    entry.problems = tuple(problems)
    return entry


def _kernel_name(files: tuple[FileInfo, ...]) -> tuple[str | None, list[str]]:
    """The kernel's name, from its group, else its metadata, else any IR/binary file stem."""
    groups = [n for f in files if (n := kernel_name_of_group(f.name))]
    metas = [f.name[: -len(".json")] for f in files if f.kind == FileKind.METADATA]
    for name in groups:
        if name in metas:
            return name, groups
    if groups:
        return groups[0], groups
    if metas:
        return metas[0], groups
    for f in files:
        if f.kind in (FileKind.IR, FileKind.ASM, FileKind.BINARY, FileKind.SOURCE):
            return f.name.rsplit(".", 1)[0], groups
    return None, groups


def _read_kernel(
    entry: Entry,
    path: str,
    real: dict[str, str],
    problems: list[Problem],
    known: Known | None,
) -> None:
    name, groups = _kernel_name(entry.files)
    entry.name = name
    if len(groups) > 1:
        problems.append(
            Problem(
                "multiple-groups", f"{len(groups)} group files; only {name}'s is used", "warning"
            )
        )
    meta_file = f"{name}.json"
    if meta_file not in real:
        problems.append(
            Problem(
                "missing-metadata",
                f"no metadata file {meta_file} (a failed compile, or "
                "files were deleted); Triton recompiles this kernel: remove the entry",
            )
        )
    else:
        _read_metadata(entry, os.path.join(path, real[meta_file]), problems, known)

    grp_file = f"__grp__{name}.json"
    if grp_file not in real:
        if meta_file in real:
            problems.append(
                Problem(
                    "missing-group",
                    f"no group file {grp_file}; Triton cannot find this "
                    "kernel and recompiles it: tcm doctor --fix rebuilds the group",
                )
            )
        entry.lookup = "miss"
        return
    try:
        held = known.data.get(grp_file) if known is not None else None
        parsed = known.groups.get(grp_file) if known is not None else None
        children = parsed if parsed is not None else read_group(
            os.path.join(path, real[grp_file]), data=held
        )  # fmt: skip
    except GroupFormatError as exc:
        effect = (
            "Triton fails when it looks this kernel up"
            if corrupt_group_crashes(entry.triton_version)
            else "Triton recompiles this kernel"
        )
        problems.append(
            Problem(
                "bad-group",
                f"group file {grp_file} is {exc}; {effect}: tcm doctor --fix rebuilds the group",
            )
        )
        entry.lookup = "miss"
        return
    except OSError as exc:
        problems.append(Problem("unreadable", f"cannot read {grp_file}: {exc.strerror or exc}"))
        entry.lookup = "miss"
        return
    binary = binary_suffixes(entry.target)
    check = check_group(path, name or "", children, binary, entry.triton_version, set(real))
    entry.lookup = check.lookup
    if check.lookup == "broken":
        problems.append(
            Problem(
                "broken-hit",
                f"group resolves {meta_file} but no {'/'.join(binary)} binary; "
                "Triton takes it as a hit and fails loading the kernel: remove the entry",
            )
        )
    if check.foreign:
        where = sorted({os.path.dirname(children[c]) for c in check.foreign})
        effect = (
            "Triton reads the kernel from there while it exists"
            if check.lookup == "foreign-hit"
            else "Triton misses this kernel"
        )
        problems.append(
            Problem(
                "foreign-paths",
                f"group points outside this entry ({len(check.foreign)} "
                f"of {len(children)} paths, e.g. {where[0]}); {effect}: tcm doctor --fix "
                "rewrites the group to this location",
            )
        )
    inside_missing = [c for c in check.missing if c not in check.foreign]
    if inside_missing or check.unlisted_metadata:
        what = (
            f"lists missing files: {', '.join(sorted(inside_missing))}"
            if inside_missing
            else f"does not list {meta_file}"
        )
        effect = "Triton misses this kernel" if check.lookup == "miss" else "the kernel still hits"
        problems.append(
            Problem(
                "incomplete-group",
                f"group {what}; {effect}",
                "error" if check.lookup == "miss" else "warning",
            )
        )


def _read_metadata(
    entry: Entry, meta_path: str, problems: list[Problem], known: Known | None = None
) -> None:
    fname = os.path.basename(meta_path)
    if known is not None and fname in known.parsed:
        meta, text = known.parsed[fname]
        _take_metadata(entry, meta, text, fname, problems)
        return
    data = known.data.get(fname) if known is not None else None
    try:
        raw = read_capped(meta_path) if data is None else data
        if len(raw) > MAX_JSON:
            raise ValueError(f"larger than {MAX_JSON >> 20} MiB")
        text = raw.decode("utf-8")  # as Triton reads it: UTF-8, no guessing UTF-16
        meta = json.loads(text)
    except OSError as exc:
        problems.append(Problem("unreadable", f"cannot read {fname}: {exc.strerror or exc}"))
        return
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        problems.append(
            Problem(
                "bad-metadata",
                f"{fname} is not valid JSON ({why}); Triton fails "
                "when it loads this kernel: remove the entry",
            )
        )
        return
    if not isinstance(meta, dict):
        problems.append(Problem("bad-metadata", f"{fname} is not a JSON object"))
        return
    if known is not None:
        known.parsed[fname] = (meta, text)
    _take_metadata(entry, meta, text, fname, problems)


def _take_metadata(
    entry: Entry, meta: dict[str, Any], text: str, fname: str, problems: list[Problem]
) -> None:
    entry.metadata = meta
    entry.metadata_text = text
    if isinstance(meta.get("name"), str) and meta["name"] != entry.name:
        log.debug(
            "%s: metadata name %s differs from file name %s", entry.key, meta["name"], entry.name
        )
    entry.target = Target.from_metadata(meta.get("target"))
    if entry.target is None:
        problems.append(
            Problem(
                "bad-metadata",
                f"{fname} has no usable target {{backend, arch, warp_size}}",
                "warning",
            )
        )
    version = meta.get("triton_version")  # absent before Triton 3.3
    entry.triton_version = version if isinstance(version, str) else None
    entry.num_warps = _int(meta.get("num_warps"))
    entry.num_stages = _int(meta.get("num_stages"))
    entry.num_ctas = _int(meta.get("num_ctas"))
    entry.shared = _int(meta.get("shared"))


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
