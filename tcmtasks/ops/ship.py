"""Operations that make and move images: package, push, inspect."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache.entries import Entry, EntryKind, binary_suffixes
from ..cache.groups import check_group, group_filename, read_group, relocated_children
from ..cache.roots import Root
from ..errors import CacheError, GroupFormatError, UsageError, map_os_error
from ..fleet import member_dirs
from ..oci.compress import check_level
from ..oci.image import MANIFEST_METADATA, MT_MANIFEST, Dest
from ..oci.image import package as build_image
from ..oci.inspect import ImageInfo
from ..oci.inspect import inspect as read_image
from ..oci.layout import OciLayout
from ..oci.refs import ImageRef, parse
from ..oci.transfer import RegistryOptions, copy_image, discard_new_layout, open_dest, open_source
from ..parts import Part, for_gpus
from ..parts import find as find_part
from ..producer import RECORD
from ..progress import Progress, counter
from ..selection import Criteria, select
from ..targets import Target
from ..trust.sign import SignOptions, prepare
from ._common import DbPath, explicit_roots, open_index, refresh
from .maintain import kernels_only

BUILDERS = ("tcm", "podman", "docker")


@dataclass
class PackageResult:
    reference: str
    digest: str
    entries: list[Entry]
    skipped: list[tuple[Entry, str]] = field(default_factory=list)
    layer_size: int | None = None  # None for engine builds (the engine's layer)
    labels: dict[str, str] = field(default_factory=dict)
    builder: str = "tcm"
    parts: list[Part] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)  # what signing wrote, a line each

    @property
    def pinned(self) -> str | None:
        """The reference that names exactly this image (docker:// only): what to pull."""
        return pinned(self.reference, self.digest)

    @property
    def cache_size_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reference": self.reference,
            "digest": self.digest,
            "entries": len(self.entries),
            "skipped": len(self.skipped),
            "cache_size_bytes": self.cache_size_bytes,
        }
        if self.builder == "tcm":
            out.update(layer_size=self.layer_size, labels=self.labels)
        else:
            out["builder"] = self.builder
        if self.parts:
            out["parts"] = [p.describe() for p in self.parts]
        if self.pinned:
            out["pinned"] = self.pinned
        if self.signatures:
            out["signatures"] = self.signatures
        return out


@dataclass
class Sources:
    """What the dirs given to package hold: parts, and Triton roots with their destinations."""

    parts: list[Part] = field(default_factory=list)
    roots: list[Root] = field(default_factory=list)
    dest_of: dict[str, Dest] = field(default_factory=dict)  # abs Triton root -> destination
    record_of: dict[str, dict[str, Any]] = field(default_factory=dict)  # abs root -> record
    records: list[dict[str, Any]] = field(default_factory=list)
    #: the GPUs the parts were made for (device name -> Triton target), from the warms' records
    gpus: dict[str, str] = field(default_factory=dict)

    @property
    def producer(self) -> dict[str, Any] | None:
        """The image's producer label: what all the given dirs' records agree on (an image
        merged from several warms says per entry what built it)."""
        if not self.records:
            return None
        common = {
            k: v for k, v in self.records[0].items() if all(r.get(k) == v for r in self.records)
        }
        return common or None


#: What a warm's record says about the build behind each entry's key.
BUILD_FIELDS = ("python", "triton_key", "ptxas", "torch")


def collect(cache_dirs: list[Path]) -> Sources:
    """Sort the given dirs (a fleet dir: its members) into Inductor/vLLM parts and plain
    Triton roots; caches of one kind warmed for different GPUs become one part whose units
    say which GPUs need them."""
    found = Sources()
    by_kind: dict[str, list[tuple[Part, list[str]]]] = {}
    for d in [m for given in cache_dirs for m in member_dirs(Path(given))]:
        part = find_part(d) if d.is_dir() else None
        record = read_producer_record(d) if d.is_dir() else None
        gpus = [str(g) for g in (record or {}).get("gpus") or []]
        if record is not None:
            found.records.append(record)
        first = len(found.roots)
        if part is None:
            for root in explicit_roots([d]):
                found.roots.append(root)
                found.dest_of[os.path.abspath(root.path)] = ("triton", "")
        else:
            by_kind.setdefault(part.kind, []).append((part, gpus))
            targets = [str(t) for t in (record or {}).get("targets") or []]
            for g, t in zip(gpus, targets, strict=False):  # Triton's target of each GPU
                found.gpus.setdefault(g, t)
            for rel in part.triton_roots:
                root = Root(part.base / rel, part.kind, rel)
                found.roots.append(root)
                where = f"{part.mount}/{rel}" if part.mount else rel
                found.dest_of[os.path.abspath(root.path)] = (part.kind, where)
        for root in found.roots[first:]:
            if record is not None:
                found.record_of[os.path.abspath(root.path)] = record
    found.parts = [
        for_gpus([p for p, _g in group], [g for _p, g in group]) for group in by_kind.values()
    ]
    if not any(p.gpus for p in found.parts):
        found.gpus = {}  # only Inductor's and vLLM's keys hold the GPU's name
    return found


def builds_of(
    chosen: list[Entry], record_of: dict[str, dict[str, Any]], every: list[Entry] | None = None
) -> dict[str, Any]:
    """Per entry key, the build its warm recorded (Python ABI, triton_key, ptxas, torch): the
    restore keeps only entries whose key this workload's runtime can compute; and, for a
    cache made for named GPUs, which of them compiled it (of ``every`` entry, the key's
    copies in several GPUs' caches included)."""
    out: dict[str, Any] = {}
    for e in chosen:
        record = record_of.get(os.path.abspath(e.root)) or {}
        build = {k: record[k] for k in BUILD_FIELDS if record.get(k)}
        if build:
            out[e.key] = build
    by_key: dict[str, set[str]] = {}
    for e in every or []:
        gpus = (record_of.get(os.path.abspath(e.root)) or {}).get("gpus") or []
        by_key.setdefault(e.key, set()).update(map(str, gpus))
    for key, gpus in by_key.items():
        if gpus:
            out.setdefault(key, {})["gpus"] = sorted(gpus)
    return out


def read_producer_record(cache_dir: Path) -> dict[str, Any] | None:
    """The record a warm left beside the cache, for the image's producer label."""
    path = cache_dir / RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CacheError(
            f"producer record {path} is unreadable ({exc}); warm the cache again, or delete "
            "the file to package without a producer label"
        ) from None
    if not isinstance(data, dict):
        raise CacheError(f"producer record {path} is not a JSON object; delete it or warm again")
    return data


def package(
    cache_dirs: Path | list[Path],
    ref: str | ImageRef,
    *,
    criteria: Criteria | None = None,
    targets: list[Target] | None = None,
    compression: str = "gzip",
    level: int | None = None,
    mount_path: str | None = None,
    builder: str = "tcm",
    registry: RegistryOptions | None = None,
    db: DbPath = None,
    progress: Progress | None = None,
    sign: SignOptions | None = None,
) -> PackageResult:
    """Package caches as one OCI image at ``ref``: the healthy kernel entries (lookup: hit) of
    Triton caches, and whole Inductor and vLLM caches (every artifact a fresh node needs, each
    in its own part of the layer, its Triton entries as Triton entries). Reproducible with the
    tcm builder: the same input gives the same digest (``SOURCE_DATE_EPOCH`` sets the
    timestamps); podman/docker build Triton-only images through their API. ``sign`` signs
    what a docker:// destination received (keys checked before any work)."""
    dest = parse(ref) if isinstance(ref, str) else ref
    check_level(compression, level)  # before any work
    signer = prepare(sign or SignOptions(), dest)
    if builder not in BUILDERS:
        raise UsageError(f"unknown builder {builder!r}; use tcm, podman or docker")
    dirs = [cache_dirs] if isinstance(cache_dirs, (str, Path)) else list(cache_dirs)
    if not dirs:
        raise UsageError("give at least one cache dir to package")
    sources = collect([Path(d) for d in dirs])
    criteria = kernels_only(criteria)
    with open_index(db) as idx:
        refresh(idx, sources.roots, progress)
        found = idx.entries([r.path for r in sources.roots], with_metadata=MANIFEST_METADATA)
        entries = select(found, criteria)
    if targets:
        entries = [e for e in entries if e.target in targets]
    if builder == "tcm" and any(e.target and e.target.backend == "cuda" for e in entries):
        # Triton's C helpers go with CUDA kernels: a node without a compiler needs them
        entries += [e for e in found if e.kind == EntryKind.MODULE]
    verdicts = [(e, unpackable(e)) for e in entries]
    skipped = [(e, why) for e, why in verdicts if why is not None]
    chosen, dests = _unique([e for e, why in verdicts if why is None], sources.dest_of)
    registry = registry or RegistryOptions()
    if builder != "tcm":
        if sources.parts:
            raise UsageError(
                f"--builder {builder} packages Triton caches only; package Inductor and vLLM "
                "caches with the tcm builder"
            )
        result = _package_with_engine(
            builder, chosen, skipped, dest, registry, mount_path, sources.producer
        )
    else:
        ok = [e for e, why in verdicts if why is None]
        builds = builds_of(chosen, sources.record_of, ok if sources.gpus else None)
        result = _package(
            chosen, skipped, dest, registry, compression, level, mount_path, sources.producer,
            progress, sources.parts, dests, builds, sources.gpus,
        )  # fmt: skip
    if signer is not None:
        result.signatures = signer.sign(result.digest, registry)
    return result


def pinned(reference: str, digest: str) -> str | None:
    ref = parse(reference)
    if ref.transport != "docker" or not digest:
        return None
    return f"docker://{ref.host}/{ref.repo}@{digest}"


def unpackable(e: Entry) -> str | None:
    """Why an entry cannot ship, or None. A hit ships; so does an entry that misses only
    because its group points at the dir it was copied from (an Inductor dir moved to another
    path): the image holds the entry's own files under bare names, and restoring points the
    group at their new place, where the lookup hits."""
    if e.lookup == "hit" or e.kind == EntryKind.MODULE:
        return None
    if {p.code for p in e.problems} <= {"foreign-paths"} and e.name:
        try:
            children = read_group(e.path / group_filename(e.name))
        except (OSError, GroupFormatError):
            children = {}
        own = relocated_children(e.path, children)
        if check_group(e.path, e.name, own, binary_suffixes(e.target)).lookup == "hit":
            return None
    return f"lookup is '{e.lookup}' (tcm doctor)"


def _unique(
    entries: list[Entry], dest_of: dict[str, Dest]
) -> tuple[list[Entry], dict[str, list[Dest]] | None]:
    """One entry per key (vLLM ranks hold copies of one kernel), with every place it goes;
    None when everything goes to one plain Triton cache (an MCV-shaped manifest)."""
    chosen: dict[str, Entry] = {}
    dests: dict[str, set[Dest]] = {}
    for e in entries:
        chosen.setdefault(e.key, e)
        dest = dest_of.get(os.path.abspath(e.root), ("triton", ""))
        dests.setdefault(e.key, set()).add(dest)
        if e.kind == EntryKind.MODULE and dest[0] != "triton":
            # a C helper of an Inductor (or vLLM) cache: the node may ask its plain Triton
            # cache for it. cuda_utils: built before Inductor points Triton at its own dir
            # (warm/helpers.py ``inductor_helpers``); a launcher: built in the main process,
            # whose TRITON_CACHE_DIR only Inductor's CachingAutotuner.__init__ sets, and the
            # autotuners of a cached graph, and those compiled in workers, arrive pickled,
            # without it (on an H100, dynamic=True OPT-125m's node built 3 launchers the
            # image held in triton/0, bench/RESULTS.md). Tiny files: both places
            dests[e.key].add(("triton", ""))
    plain = all(d == {("triton", "")} for d in dests.values())
    return list(chosen.values()), None if plain else {k: sorted(v) for k, v in dests.items()}


def _package(
    chosen: list[Entry],
    skipped: list[tuple[Entry, str]],
    dest: ImageRef,
    registry: RegistryOptions,
    compression: str,
    level: int | None,
    mount_path: str | None,
    producer: dict[str, Any] | None,
    progress: Progress | None,
    parts: list[Part],
    dests: dict[str, list[Dest]] | None,
    builds: dict[str, Any],
    gpus: dict[str, str],
) -> PackageResult:
    local = dest.path if dest.transport in ("oci", "oci-archive") else None
    existed = local is not None and local.exists()
    # an OSError here is writing the image (reading the cache is mapped below this)
    with map_os_error("write the image to", local or str(dest)):
        staging = None
        try:
            if dest.transport == "docker":
                staging = tempfile.TemporaryDirectory(prefix="tcm-package-")
                store: Any = OciLayout(Path(staging.name), dest.tag, create=True)
            else:
                store = open_dest(dest, registry)
            try:
                built = build_image(
                    chosen,
                    store,
                    compression=compression,
                    level=level,
                    mount_path=mount_path,
                    producer=producer,
                    parts=parts,
                    dests=dests,
                    builds=builds,
                    gpus=gpus,
                    progress=counter(progress, "packaging", "bytes"),
                )
                store.put_manifest(built.manifest, MT_MANIFEST)
                store.commit()
                if staging is not None:
                    copy_image(
                        store,
                        open_dest(dest, registry),
                        progress=counter(progress, "pushing", "bytes"),
                    )
            finally:
                if hasattr(store, "close"):
                    store.close()
        except BaseException:
            if local is not None and dest.transport == "oci":
                discard_new_layout(local, existed)
            raise
        finally:
            if staging is not None:
                staging.cleanup()
        return PackageResult(
            str(dest), built.digest, chosen, skipped, built.layer.size, built.labels, "tcm", parts
        )


def _package_with_engine(
    builder: str,
    chosen: list[Entry],
    skipped: list[tuple[Entry, str]],
    dest: ImageRef,
    registry: RegistryOptions,
    mount_path: str | None,
    producer: dict[str, Any] | None,
) -> PackageResult:
    from ..oci.engine import build_with_engine

    if not chosen:
        raise UsageError("no kernel entries selected: nothing to package")
    archive = build_with_engine(
        builder, chosen, f"localhost/tcm-build:{dest.tag}", mount_path=mount_path, producer=producer
    )
    try:
        result = copy_image(archive, open_dest(dest, registry))
    finally:
        archive.file.unlink(missing_ok=True)
    return PackageResult(str(dest), result.digest, chosen, skipped, builder=builder)


@dataclass
class PushResult:
    source: str
    destination: str
    digest: str
    copied: int
    skipped: int
    bytes: int
    seconds: float
    signatures: list[str] = field(default_factory=list)

    @property
    def pinned(self) -> str | None:
        return pinned(self.destination, self.digest)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "pinned": self.pinned}


def push(
    src: str | ImageRef,
    dest: str | ImageRef,
    *,
    registry: RegistryOptions | None = None,
    progress: Progress | None = None,
    sign: SignOptions | None = None,
) -> PushResult:
    """Copy an image between any two references; blobs the destination has are skipped and
    every blob is verified as it streams. A layout this created is removed on failure.
    ``sign`` signs the manifest a docker:// destination received (keys checked first)."""
    src_ref = parse(src) if isinstance(src, str) else src
    dest_ref = parse(dest) if isinstance(dest, str) else dest
    signer = prepare(sign or SignOptions(), dest_ref)
    existed = dest_ref.path is not None and dest_ref.path.exists()
    source = open_source(src_ref, registry)
    t0 = time.perf_counter()
    try:
        result = copy_image(
            source, open_dest(dest_ref, registry), progress=counter(progress, "copying", "bytes")
        )
    except BaseException:
        if dest_ref.transport == "oci" and dest_ref.path is not None:
            discard_new_layout(dest_ref.path, existed)
        raise
    pushed = PushResult(
        str(src),
        str(dest),
        result.digest,
        result.copied,
        result.skipped,
        result.bytes,
        time.perf_counter() - t0,
    )
    if signer is not None:
        pushed.signatures = signer.sign(result.digest, registry)
    return pushed


def inspect(
    ref: str | ImageRef,
    *,
    registry: RegistryOptions | None = None,
    entries: bool = True,
    python: str | Path | None = None,
    triton: str | None = None,
) -> ImageInfo:
    """An image's labels, targets, producer and (from the head of its layer) entries;
    nothing is extracted. With ``python`` or ``triton``, each entry and C helper also says
    whether that runtime could hit or load it (``skip``: why not)."""
    info = read_image(open_source(ref, registry), entries=entries or bool(python or triton))
    if python is not None or triton is not None:
        from ..extract import build_of
        from ..judging import module_skip, why_skip
        from ..runtime import resolve
        from ..targets import Target

        rt = resolve(python=python, triton=triton)
        info.runtime = rt.to_dict()
        for row in info.entries or []:
            why = why_skip(
                Target.from_metadata(row), row.get("triton_version"), None, rt.producer,
                build_of(row),
            )  # fmt: skip
            row["skip"] = why
        for row in info.helpers:
            files = [str(f) for f in row.get("files") or []]
            row["skip"] = module_skip(files, rt.producer)
    return info
