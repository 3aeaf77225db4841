"""Build an MCV/TCV-compatible OCI image from cache entries, reproducibly and without a daemon.

One layer holds ``io.triton.manifest/manifest.json`` (first, so ``inspect`` reads it from the head
of the stream), ``io.triton.cache/<KEY>/...`` and, for a whole compile cache, its other parts
(``io.inductor.cache/...``, ``io.vllm.cache/...``, see ``tcmtasks.parts``); the in-layer
manifest describes each part and says which Triton root each entry came from. Labels carry a
small summary (containerd caps a label at 4 KiB, docs/cache-formats.md, "Sizes"); per-entry
detail lives in the in-layer manifest.
Same entries in, same digest out: sorted names, fixed modes and owners, mtime 0 or
``SOURCE_DATE_EPOCH``, gzip header mtime 0, canonical JSON (docs/cache-formats.md, "Reproducible
layers").
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from .. import __version__
from ..cache.entries import Entry, EntryKind, FileKind
from ..cache.groups import group_filename, group_text, read_group
from ..errors import CacheError, UsageError, os_error
from ..parts import Part, unit_of
from ..producer import libdir_of
from .compress import LayerSink
from .tarstream import TarStream

CACHE_PREFIX = "io.triton.cache"
MANIFEST_PATH = "io.triton.manifest/manifest.json"

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}

LABEL_VARIANT = "cache.triton.image/variant"
LABEL_COUNT = "cache.triton.image/entry-count"
LABEL_SIZE = "cache.triton.image/cache-size-bytes"
LABEL_SUMMARY = "cache.triton.image/summary"
LABEL_PRODUCER = "io.tcm.producer"
LABEL_TCM = "io.tcm.version"
LABEL_PARTS = "io.tcm.parts"
#: The GPUs an image's Inductor/vLLM units were made for: name -> target and counts per part
LABEL_GPUS = "io.tcm.gpus"
LABEL_VLLM_COUNT = "cache.vllm.image/entry-count"  # MCV's labels for vLLM caches
LABEL_VLLM_SIZE = "cache.vllm.image/cache-size-bytes"

#: Where an entry goes on restore: (part kind or "triton", its Triton root relative to the
#: kind's cache root). A plain Triton cache is ("triton", "").
Dest = tuple[str, str]


def canonical(data: Any) -> bytes:
    """The one JSON encoding tcm writes: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def source_date_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds") from None


@dataclass(frozen=True)
class Blob:
    digest: str  # "sha256:..."
    size: int
    media_type: str

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass
class BuiltImage:
    """A built image: its blobs on disk (in a store) and the manifest that ties them."""

    manifest: bytes
    config: bytes
    layer: Blob
    diff_id: str
    labels: dict[str, str]

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()


#: The metadata fields ``entry_manifest_row`` reads (all an index read needs to parse).
MANIFEST_METADATA = ("hash", "ptx_version", "debug", "extern_libs")


def entry_manifest_row(e: Entry) -> dict[str, Any]:
    """One entry of ``io.triton.manifest/manifest.json``: MCV's fields plus tcm's."""
    meta = e.metadata or {}
    t = e.target
    row = {
        "hash": meta.get("hash"), "backend": t.backend if t else None,
        "arch": t.arch if t else None, "warp_size": t.warp_size if t else None,
        "ptx_version": meta.get("ptx_version"), "num_stages": e.num_stages,
        "num_warps": e.num_warps, "debug": meta.get("debug"), "dummy_key": e.key,
        "key": e.key, "name": e.name, "triton_version": e.triton_version,
        "size": e.size, "files": [f.name for f in e.files],
    }  # fmt: skip
    libdir = libdir_of(meta) if t and t.backend == "hip" else None
    if libdir:  # HIP keys hold it: a restore compares it with the workload's Triton
        row["hip_libdir"] = libdir
    return row


def summary_targets(entries: Iterable[Entry]) -> list[dict[str, Any]]:
    seen = sorted({e.target for e in entries if e.target})
    return [{"backend": t.backend, "arch": t.arch, "warp_size": t.warp_size} for t in seen]


def group_for_image(e: Entry, mount_path: str | None, *, dir_fd: int | None = None) -> bytes:
    """The entry's group as shipped: no packer path. With ``mount_path`` the absolute paths of
    an image mounted read-only there; otherwise bare names, which extraction rewrites.
    ``dir_fd``: the entry's dir, open."""
    grp = group_filename(e.name or "")
    children = read_group(grp if dir_fd is not None else e.path / grp, dir_fd=dir_fd)
    present = {f.name for f in e.files}  # as scanned; a file gone since fails when read
    kept = sorted(c for c in children if c in present)
    if mount_path:
        return group_text({c: os.path.join(mount_path, e.key, c) for c in kept}).encode()
    return group_text({c: c for c in kept}).encode()


def layer_manifest(
    entries: list[Entry],
    parts: list[Part],
    dests: dict[str, list[Dest]] | None,
    builds: dict[str, Any] | None = None,
) -> bytes:
    """``io.triton.manifest/manifest.json``: MCV's ``triton`` list (each row with where it
    goes when the image holds more than one Triton root, and the build behind its key: Python
    ABI, triton_key, ptxas, as its warm recorded them), and tcm's ``parts``."""
    rows: list[dict[str, Any]] = []
    helpers: list[dict[str, Any]] = []
    for e in entries:
        row = entry_manifest_row(e)
        row.update((builds or {}).get(e.key, {}))
        if dests is not None:
            row["dests"] = [list(d) for d in sorted(dests.get(e.key, [("triton", "")]))]
        (helpers if e.kind == EntryKind.MODULE else rows).append(row)
    data: dict[str, Any] = {"triton": rows}
    if helpers:  # Triton's C helpers: a list of their own, MCV's "triton" list stays kernels
        data["helpers"] = helpers
    if parts:
        data["parts"] = [p.describe() for p in sorted(parts, key=lambda p: p.kind)]
    return canonical(data)


def build_layer(
    entries: list[Entry],
    out: BinaryIO,
    *,
    parts: list[Part] | None = None,
    dests: dict[str, list[Dest]] | None = None,
    builds: dict[str, Any] | None = None,
    compression: str = "gzip",
    level: int | None = None,
    mount_path: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Blob, str]:
    """Write the layer to ``out``; return its blob (compressed digest) and diff_id.
    ``progress(done, total)`` hears the tar bytes written against the files' total."""
    mtime = source_date_epoch()
    parts = sorted(parts or [], key=lambda p: p.kind)
    sink = LayerSink(out, compression, level)
    total = sum(e.size for e in entries) + sum(p.bytes for p in parts)
    try:
        tar = TarStream(sink, mtime, (lambda n: progress(n, total)) if progress else None)
        manifest = layer_manifest(entries, parts, dests, builds)
        for d in ("io.triton.manifest/", f"{CACHE_PREFIX}/"):
            tar.add_dir(d)
        tar.add_bytes(MANIFEST_PATH, manifest)
        for e in sorted(entries, key=lambda e: e.key):
            _add_entry(tar, e, mount_path)
        for part in parts:
            _add_part(tar, part)
        tar.close()
    except BaseException:
        sink.abort()
        raise
    sink.close()
    return (
        Blob("sha256:" + sink.sha.hexdigest(), sink.size, MT_LAYER[compression]),
        "sha256:" + sink.diff_sha.hexdigest(),
    )


def _add_entry(tar: TarStream, e: Entry, mount_path: str | None) -> None:
    """The entry's dir and files (its group rewritten), each opened relative to the dir."""
    prefix = f"{CACHE_PREFIX}/{e.key}/"
    tar.add_dir(prefix)
    grp = group_filename(e.name or "")
    base = os.path.join(e.root, e.key)
    try:
        dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for f in sorted(e.files, key=lambda f: f.name):
                if f.name == grp:
                    tar.add_bytes(prefix + f.name, group_for_image(e, mount_path, dir_fd=dir_fd))
                else:
                    tar.add_file(prefix + f.name, f.name, dir_fd=dir_fd, size=f.size)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        if exc.filename and not os.path.isabs(exc.filename):
            exc.filename = os.path.join(base, exc.filename)  # the message names the whole path
        raise


def _add_part(tar: TarStream, part: Part) -> None:
    """The part's files under its prefix, each dir announced once, in sorted order."""
    made: set[str] = set()
    for f in sorted(part.files, key=lambda f: f.rel):
        dirs = f.rel.split("/")[:-1]
        for i in range(len(dirs) + 1):
            d = part.prefix + "".join(x + "/" for x in dirs[:i])
            if d not in made:
                made.add(d)
                tar.add_dir(d)
        mode = 0o755 if f.rel.endswith(".so") else 0o644
        tar.add_file(part.prefix + f.rel, str(f.path), mode)


def _build_layer_or_explain(entries: list[Entry], out: BinaryIO, **kw: Any) -> tuple[Blob, str]:
    try:
        return build_layer(entries, out, **kw)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise os_error(exc, "write the layer", getattr(out, "name", None)) from None
        raise CacheError(
            f"cannot read {exc.filename or 'a cache file'} while packaging ({exc.strerror}); "
            "the cache changed under tcm: run tcm index and package again"
        ) from None


def gpus_label(
    entries: list[Entry], parts: list[Part], builds: dict[str, Any], gpus: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Per GPU the image serves: its Triton target, how many units of each part it needs,
    and how many Triton entries its warm compiled (those are still chosen by target)."""
    out: dict[str, dict[str, Any]] = {}
    for name, target in sorted(gpus.items()):
        row: dict[str, Any] = {"target": target}
        row["triton"] = sum(1 for e in entries if name in builds.get(e.key, {}).get("gpus", []))
        for p in parts:
            if name in p.gpus:
                row[p.kind] = len(p.gpus[name])
        out[name] = row
    return out


def labels_for(
    entries: list[Entry],
    producer: dict[str, Any] | None,
    parts: list[Part] | None = None,
    gpus: dict[str, dict[str, Any]] | None = None,
) -> dict[str, str]:
    created = datetime.fromtimestamp(source_date_epoch(), timezone.utc)
    versions = sorted({e.triton_version for e in entries if e.triton_version})
    kernels = [e for e in entries if e.kind != EntryKind.MODULE]  # MCV counts kernels
    labels = {
        LABEL_VARIANT: "multi",
        LABEL_COUNT: str(len(kernels)),
        LABEL_SIZE: str(sum(e.size for e in kernels)),
        LABEL_SUMMARY: canonical({"targets": summary_targets(entries)}).decode(),
        LABEL_TCM: __version__,
        "org.opencontainers.image.created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.description": "Triton kernel cache"
        + (f" (Triton {', '.join(versions)})" if versions else ""),
    }
    if producer:
        labels[LABEL_PRODUCER] = canonical(producer).decode()
    if parts:
        summary = {
            p.kind: {"files": len(p.files), "bytes": p.bytes, "source": str(p.base)} for p in parts
        }
        labels[LABEL_PARTS] = canonical(summary).decode()
        kinds = " and ".join(sorted(p.kind for p in parts))
        labels["org.opencontainers.image.description"] = (
            f"Compile cache: {kinds} with Triton kernels"
            + (f" (Triton {', '.join(versions)})" if versions else "")
        )
    if gpus:
        labels[LABEL_GPUS] = canonical(gpus).decode()
    for p in parts or []:
        if p.kind == "vllm":
            labels[LABEL_VLLM_COUNT] = str(len({unit_of(f.rel) for f in p.files}))
            labels[LABEL_VLLM_SIZE] = str(p.bytes)
    return labels


def package(
    entries: Iterable[Entry],
    store: Any,
    *,
    compression: str = "gzip",
    level: int | None = None,
    mount_path: str | None = None,
    producer: dict[str, Any] | None = None,
    extra_labels: dict[str, str] | None = None,
    parts: list[Part] | None = None,
    dests: dict[str, list[Dest]] | None = None,
    builds: dict[str, Any] | None = None,
    gpus: dict[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BuiltImage:
    """Build the image's blobs into ``store`` (anything with ``add_blob_file``); ``gpus``:
    the GPUs its parts were made for (device name -> Triton target)."""
    chosen = sorted(
        (
            e
            for e in entries
            if (e.kind == EntryKind.KERNEL and e.files_of(FileKind.METADATA))
            or e.kind == EntryKind.MODULE  # Triton's C helpers: one .so each
        ),
        key=lambda e: e.key,
    )
    parts = parts or []
    if not chosen and not any(p.files for p in parts):
        raise UsageError("no kernel entries selected: nothing to package")
    if mount_path and not os.path.isabs(mount_path):
        raise UsageError(f"--mount-path must be absolute, not {mount_path!r}")
    if mount_path and parts:
        raise UsageError(
            "--mount-path is for a plain Triton cache mounted read-only; an Inductor or vLLM "
            "cache is restored with tcm pull"
        )
    fd, tmp = tempfile.mkstemp(prefix=".layer-", dir=store.tmp_dir())
    try:
        with os.fdopen(fd, "wb") as f:
            layer, diff_id = _build_layer_or_explain(
                chosen,
                f,
                parts=parts,
                dests=dests,
                builds=builds,
                compression=compression,
                level=level,
                mount_path=mount_path,
                progress=progress,
            )
        store.add_blob_file(Path(tmp), layer.digest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    served = gpus_label(chosen, parts, builds or {}, gpus) if gpus else None
    labels = {**labels_for(chosen, producer, parts, served), **(extra_labels or {})}
    created = labels["org.opencontainers.image.created"]
    config = canonical({
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": f"tcm {__version__} package"}],
    })  # fmt: skip
    config_blob = store.add_blob_bytes(config, MT_CONFIG)
    manifest = canonical({
        "schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": config_blob.descriptor(), "layers": [layer.descriptor()],
        "annotations": labels,
    })  # fmt: skip
    return BuiltImage(manifest, config, layer, diff_id, labels)
