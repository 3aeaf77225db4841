"""Open any image reference as a source or destination, and copy images between them.

Every blob is verified (digest and size) as it streams from the source, and the manifest is
written last, so a destination either gets the whole image or no new tag at all.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ImageError, UsageError
from .layout import DockerArchive, OciArchive, OciLayout, blobs_of, parse_manifest
from .refs import ImageRef, parse

if TYPE_CHECKING:
    from .registry import Registry

# The registry client (urllib, ssl, http.client: ~12 ms) is imported where a registry is
# used, not by a command that only reads or writes local layouts (tcm package oci:...).


@dataclass
class RegistryOptions:
    insecure_hosts: list[str] = field(default_factory=list)
    ca_cert: Path | None = None
    chunk_size: int | None = None
    timeout: float | None = None  # seconds without data before a transfer is retried

    def registry(self, host: str) -> Registry:
        kw: dict[str, Any] = {
            "insecure": host in self.insecure_hosts,
            "ca_cert": self.ca_cert,
            "insecure_hosts": self.insecure_hosts,
        }
        if self.timeout:
            kw["timeout"] = self.timeout
        if self.chunk_size:
            kw["chunk_size"] = self.chunk_size
        from .registry import Registry

        return Registry(host, **kw)


def open_source(ref: str | ImageRef, opts: RegistryOptions | None = None) -> Any:
    r = parse(ref) if isinstance(ref, str) else ref
    opts = opts or RegistryOptions()
    if r.transport == "oci":
        return OciLayout(r.path, r.tag)  # type: ignore[arg-type]
    if r.transport == "oci-archive":
        if not r.path or not r.path.is_file():
            raise ImageError(f"{r.path} does not exist")
        return OciArchive(r.path, r.tag)
    if r.transport == "docker-archive":
        return DockerArchive(r.path)  # type: ignore[arg-type]
    from .registry import RegistryImage

    return RegistryImage(opts.registry(r.host), r.repo, r.tag, r.digest)


def open_dest(ref: str | ImageRef, opts: RegistryOptions | None = None) -> Any:
    r = parse(ref) if isinstance(ref, str) else ref
    opts = opts or RegistryOptions()
    if r.transport == "oci":
        return OciLayout(r.path, r.tag, create=True)  # type: ignore[arg-type]
    if r.transport == "oci-archive":
        return OciArchive(r.path, r.tag, create=True)  # type: ignore[arg-type]
    if r.transport == "docker-archive":
        raise UsageError("docker-archive: is read-only in tcm; write oci-archive: instead")
    if r.digest:
        raise UsageError("push to a tag, not a digest (docker://HOST/REPO:TAG)")
    from .registry import RegistryImage

    return RegistryImage(opts.registry(r.host), r.repo, r.tag)


@dataclass
class CopyResult:
    digest: str
    copied: int = 0
    skipped: int = 0
    bytes: int = 0


def copy_image(
    src: Any, dst: Any, *, progress: Callable[[int, int], None] | None = None
) -> CopyResult:
    """Copy ``src``'s image to ``dst``: blobs the destination has are skipped."""
    data, media_type = src.manifest()
    manifest = parse_manifest(data, f"manifest of {src.describe()}")
    descs = blobs_of(manifest)
    from .registry import RegistryImage

    if (
        isinstance(src, RegistryImage)
        and isinstance(dst, RegistryImage)
        and (src.registry.host == dst.registry.host)
    ):
        dst.mount_from = src.repo
    total = sum(d.get("size", 0) for d in descs)
    result = CopyResult(digest="")
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    for desc in descs:
        if dst.has_blob(desc["digest"], desc.get("size")):
            result.skipped += 1
            step(desc.get("size", 0))
            continue
        dst.put_blob(desc, lambda d=desc: src.open_blob(d["digest"], d.get("size")), step)
        result.copied += 1
        result.bytes += desc.get("size", 0)
    result.digest = dst.put_manifest(data, media_type) or _digest(data)
    dst.commit()
    return result


def _digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def discard_new_layout(path: Path, existed: bool) -> None:
    """After a failed copy into a layout this run created, remove it entirely."""
    if not existed:
        shutil.rmtree(path, ignore_errors=True)
