"""Operations that make and move images: package, push, inspect."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache.entries import Entry
from ..errors import CacheError, UsageError
from ..oci.image import MT_MANIFEST
from ..oci.image import package as build_image
from ..oci.inspect import ImageInfo
from ..oci.inspect import inspect as read_image
from ..oci.layout import OciLayout
from ..oci.refs import ImageRef, parse
from ..oci.transfer import RegistryOptions, copy_image, discard_new_layout, open_dest, open_source
from ..producer import RECORD
from ..progress import Progress, counter
from ..selection import Criteria, select
from ..targets import Target
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
        return out


def read_producer_record(cache_dir: Path) -> dict[str, Any] | None:
    """The record a warm left beside the cache, for the image's producer label."""
    path = cache_dir / RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheError(
            f"producer record {path} is unreadable ({exc}); warm the cache again, or delete "
            "the file to package without a producer label"
        ) from None
    if not isinstance(data, dict):
        raise CacheError(f"producer record {path} is not a JSON object; delete it or warm again")
    return data


def package(
    cache_dir: Path,
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
) -> PackageResult:
    """Package the cache's healthy kernel entries (those whose lookup is a hit) as an OCI
    image at ``ref``: reproducible with the tcm builder (the same entries give the same
    digest; ``SOURCE_DATE_EPOCH`` sets the timestamps), or built by podman/docker."""
    dest = parse(ref) if isinstance(ref, str) else ref
    if builder not in BUILDERS:
        raise UsageError(f"unknown builder {builder!r}; use tcm, podman or docker")
    roots = explicit_roots([cache_dir])
    criteria = kernels_only(criteria)
    with open_index(db) as idx:
        refresh(idx, roots, progress)
        entries = select(idx.entries([r.path for r in roots], with_metadata=True), criteria)
    if targets:
        entries = [e for e in entries if e.target in targets]
    skipped = [(e, f"lookup is '{e.lookup}' (tcm doctor)") for e in entries if e.lookup != "hit"]
    chosen = [e for e in entries if e.lookup == "hit"]
    producer = read_producer_record(Path(cache_dir))
    registry = registry or RegistryOptions()
    if builder != "tcm":
        return _package_with_engine(builder, chosen, skipped, dest, registry, mount_path, producer)
    return _package(
        chosen, skipped, dest, registry, compression, level, mount_path, producer, progress
    )


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
) -> PackageResult:
    local = dest.path if dest.transport in ("oci", "oci-archive") else None
    existed = local is not None and local.exists()
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
        str(dest), built.digest, chosen, skipped, built.layer.size, built.labels, "tcm"
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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def push(
    src: str | ImageRef,
    dest: str | ImageRef,
    *,
    registry: RegistryOptions | None = None,
    progress: Progress | None = None,
) -> PushResult:
    """Copy an image between any two references; blobs the destination has are skipped and
    every blob is verified as it streams. A layout this created is removed on failure."""
    src_ref = parse(src) if isinstance(src, str) else src
    dest_ref = parse(dest) if isinstance(dest, str) else dest
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
    return PushResult(
        str(src),
        str(dest),
        result.digest,
        result.copied,
        result.skipped,
        result.bytes,
        time.perf_counter() - t0,
    )


def inspect(
    ref: str | ImageRef, *, registry: RegistryOptions | None = None, entries: bool = True
) -> ImageInfo:
    """An image's labels, targets, producer and (from the head of its layer) entries;
    nothing is extracted."""
    return read_image(open_source(ref, registry), entries=entries)
