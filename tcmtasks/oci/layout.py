"""Local image stores: OCI layout dirs (read/write), OCI archives (read/write), docker save
archives (read). Every blob read is checked against its digest and size while it streams.

A store is written so that a failure leaves nothing half-done: blobs land under a temp name and
are renamed in once verified; ``index.json`` is replaced atomically; an archive is written to a
temp file beside the target and renamed at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from ..atomic import atomic_write_text
from ..errors import DigestMismatch, ImageError, OversizeHeader
from .image import MT_CONFIG, MT_INDEX, MT_MANIFEST, Blob, canonical

REF_NAME = "org.opencontainers.image.ref.name"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (MT_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (MT_INDEX, DOCKER_LIST)
CHUNK = 1 << 20


def readable(path: str | Path) -> None:
    """A file made with mkstemp is 0600: give it the mode any other file here gets (0644 less
    the umask), so another user's podman or skopeo can read the layout tcm wrote."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o644 & ~mask)


class VerifyingReader(io.RawIOBase):
    """Reads through ``raw`` and raises DigestMismatch at EOF unless digest and size match."""

    def __init__(self, raw: BinaryIO, digest: str, size: int | None, what: str):
        self.raw, self.digest, self.size, self.what = raw, digest, size, what
        algo, _, self.expected = digest.partition(":")
        if algo != "sha256" or len(self.expected) != 64:
            raise ImageError(f"unsupported digest {digest!r} for {what}")
        self.sha = hashlib.sha256()
        self.seen = 0
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self.raw.read(len(buf))
        if data:
            self.sha.update(data)
            self.seen += len(data)
            if self.size is not None and self.seen > self.size:
                raise DigestMismatch(f"{self.what} is larger than its declared {self.size} bytes")
            buf[: len(data)] = data
            return len(data)
        self._check()
        return 0

    def _check(self) -> None:
        if self.done:
            return
        self.done = True
        if self.size is not None and self.seen != self.size:
            raise DigestMismatch(
                f"{self.what}: got {self.seen} bytes, expected {self.size} (transfer cut short?)"
            )
        if self.sha.hexdigest() != self.expected:
            raise DigestMismatch(
                f"{self.what}: content does not match its digest {self.digest}; the source is "
                "corrupt or was changed: nothing was kept"
            )

    def close(self) -> None:
        try:
            self.raw.close()
        finally:
            super().close()


#: Registries and containers/image cap a manifest or config at 4 MiB (docs/cache-formats.md,
#: "Sizes"): a larger one is refused before it is read, so it cannot fill memory.
MAX_DOC = 4 << 20
#: A tar header extension (PAX, GNU long name) tcm will read: real ones are a few hundred bytes;
#: Python's tarfile would read a 2 GiB one into memory.
MAX_TAR_HEADER = 1 << 20


def check_doc_size(size: Any, what: str) -> None:
    if isinstance(size, int) and size > MAX_DOC:
        raise ImageError(f"{what} is {size} bytes, over the 4 MiB registries allow: refused")


def read_doc(f: Any, what: str) -> bytes:
    """A manifest, index or config, read up to the 4 MiB cap (and refused past it)."""
    data = f.read(MAX_DOC + 1)
    if len(data) > MAX_DOC:
        raise ImageError(f"{what} is over the 4 MiB registries allow: refused")
    return bytes(data)


class SafeTarInfo(tarfile.TarInfo):
    """tarfile's member header, with PAX and GNU long-name extensions capped: each is read
    whole into memory by tarfile itself."""

    def _proc_pax(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        self._check_header()
        return super()._proc_pax(tarfile)  # type: ignore[misc,no-any-return]

    def _proc_gnulong(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        self._check_header()
        return super()._proc_gnulong(tarfile)  # type: ignore[misc,no-any-return]

    def _check_header(self) -> None:
        if self.size > MAX_TAR_HEADER:
            raise OversizeHeader(
                f"a tar header extension of {self.size} bytes (the cap is {MAX_TAR_HEADER})"
            )


def parse_manifest(data: bytes, what: str) -> dict[str, Any]:
    try:
        m = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ImageError(f"{what} is not JSON: {str(exc)[:200]}") from None
    if not isinstance(m, dict):
        raise ImageError(f"{what} is not a JSON object")
    return m


def blobs_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Descriptors of the config and layers a single-platform manifest needs."""
    try:
        return [manifest["config"], *manifest["layers"]]
    except (KeyError, TypeError):
        raise ImageError("manifest has no config/layers: not an image manifest") from None


class OciLayout:
    """An OCI image layout directory (``oci:DIR[:TAG]``)."""

    def __init__(self, path: Path, tag: str | None = None, *, create: bool = False):
        self.path = Path(path)
        self.tag = tag or "latest"
        if create:
            (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            layout = self.path / "oci-layout"
            if not layout.exists():
                atomic_write_text(layout, json.dumps({"imageLayoutVersion": "1.0.0"}))
            if not (self.path / "index.json").exists():
                atomic_write_text(
                    self.path / "index.json",
                    canonical(
                        {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": []}
                    ).decode(),
                )
        elif not (self.path / "oci-layout").is_file():
            raise ImageError(f"{self.path} is not an OCI layout (no oci-layout file)")

    def describe(self) -> str:
        return f"oci:{self.path}:{self.tag}"

    # -- blobs ----------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
            raise ImageError(f"bad digest {digest!r}")
        return self.path / "blobs" / "sha256" / hexd

    def tmp_dir(self) -> Path:
        return self.path / "blobs" / "sha256"

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        p = self.blob_path(digest)
        return p.is_file() and (size is None or p.stat().st_size == size)

    def add_blob_file(self, src: Path, digest: str) -> None:
        readable(src)
        os.replace(src, self.blob_path(digest))

    def add_blob_bytes(self, data: bytes, media_type: str) -> Blob:
        blob = Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data), media_type)
        if not self.has_blob(blob.digest, blob.size):
            fd, tmp = tempfile.mkstemp(prefix=".blob-", dir=self.tmp_dir())
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            readable(tmp)
            os.replace(tmp, self.blob_path(blob.digest))
        return blob

    def put_blob(
        self,
        desc: dict[str, Any],
        opener: Callable[[], BinaryIO],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Copy a blob in from ``opener()``, verifying it; a mismatch leaves no file behind."""
        fd, tmp = tempfile.mkstemp(prefix=".blob-", dir=self.tmp_dir())
        try:
            reader = VerifyingReader(
                opener(), desc["digest"], desc.get("size"), f"blob {desc['digest'][:19]}"
            )
            with os.fdopen(fd, "wb") as f:
                while chunk := reader.read(CHUNK):
                    f.write(chunk)
                    if progress:
                        progress(len(chunk))
            readable(tmp)
            os.replace(tmp, self.blob_path(desc["digest"]))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def open_blob(self, digest: str, size: int | None = None) -> BinaryIO:
        p = self.blob_path(digest)
        try:
            f = open(p, "rb")  # noqa: SIM115 - handed to the caller inside the reader
        except FileNotFoundError:
            raise ImageError(f"{self.describe()}: blob {digest} is missing") from None
        return VerifyingReader(f, digest, size, f"blob {digest[:19]} of {self.path}")  # type: ignore[return-value]

    # -- manifests ------------------------------------------------------------------------------

    def _index(self) -> dict[str, Any]:
        what = f"{self.path}/index.json"
        try:
            with open(self.path / "index.json", "rb") as f:
                return parse_manifest(read_doc(f, what), what)
        except OSError as exc:
            raise ImageError(f"cannot read {what}: {exc.strerror or exc}") from None

    def _manifests(self) -> list[dict[str, Any]]:
        found = self._index().get("manifests", [])
        if not isinstance(found, list):
            raise ImageError(f"{self.path}/index.json has no list of manifests: not an OCI layout")
        return [m for m in found if isinstance(m, dict)]

    def tags(self) -> list[str]:
        return [str((m.get("annotations") or {}).get(REF_NAME, "")) for m in self._manifests()]

    def read_manifest_blob(self, desc: dict[str, Any]) -> bytes:
        check_doc_size(desc.get("size"), f"manifest {desc.get('digest')}")
        with self.open_blob(desc["digest"], desc.get("size")) as f:
            return read_doc(f, f"manifest {desc.get('digest')}")

    def manifest(self) -> tuple[bytes, str]:
        for desc in self._manifests():
            if (desc.get("annotations") or {}).get(REF_NAME) == self.tag:
                data = self.read_manifest_blob(desc)
                return resolve_index(self, data, desc.get("mediaType", MT_MANIFEST))
        known = ", ".join(t for t in self.tags() if t) or "none"
        raise ImageError(f"no tag {self.tag!r} in {self.path} (tags: {known})")

    def put_manifest(self, data: bytes, media_type: str) -> str:
        blob = self.add_blob_bytes(data, media_type)
        index = self._index()
        others = [
            m
            for m in index.get("manifests", [])
            if m.get("annotations", {}).get(REF_NAME) != self.tag
        ]
        index["manifests"] = [*others, blob.descriptor(annotations={REF_NAME: self.tag})]
        atomic_write_text(self.path / "index.json", canonical(index).decode())
        return blob.digest

    def commit(self) -> None:
        pass


def resolve_index(source: Any, data: bytes, media_type: str) -> tuple[bytes, str]:
    """Follow an image index / manifest list to its linux/amd64 (or only) manifest."""
    m = parse_manifest(data, f"manifest of {source.describe()}")
    mt = m.get("mediaType", media_type)
    if mt in INDEX_TYPES or ("manifests" in m and "layers" not in m):
        entries = m.get("manifests") or []
        if not entries:
            raise ImageError(f"{source.describe()}: empty image index")
        pick = next(
            (d for d in entries if d.get("platform", {}).get("architecture") == "amd64"), entries[0]
        )
        return source.read_manifest_blob(pick), pick.get("mediaType", MT_MANIFEST)
    return data, mt


class OciArchive(OciLayout):
    """``oci-archive:FILE[:TAG]``: an OCI layout in a tar file. Read in place; written as a
    layout in a temp dir, then tarred (sorted, mtime 0) to a temp file renamed over FILE."""

    def __init__(self, file: Path, tag: str | None = None, *, create: bool = False):
        self.file = Path(file)
        self._tmp = Path(
            tempfile.mkdtemp(
                prefix=".tcm-archive-", dir=self.file.parent if self.file.parent.exists() else None
            )
        )
        try:
            if self.file.exists():
                _safe_extract(self.file, self._tmp)
            super().__init__(self._tmp, tag, create=create)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    def describe(self) -> str:
        return f"oci-archive:{self.file}:{self.tag}"

    def commit(self) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{self.file.name}.", dir=self.file.parent)
        try:
            with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w") as tar:
                for path in sorted(self._tmp.rglob("*")):
                    rel = path.relative_to(self._tmp).as_posix()
                    if path.name.startswith(".blob-"):
                        continue
                    ti = tar.gettarinfo(str(path), rel)
                    ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
                    ti.mode = 0o755 if path.is_dir() else 0o644
                    if path.is_file():
                        with open(path, "rb") as fh:
                            tar.addfile(ti, fh)
                    else:
                        tar.addfile(ti)
            readable(tmp)
            os.replace(tmp, self.file)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __del__(self) -> None:
        self.close()


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract an image archive's regular files and dirs only, refusing anything else."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ImageError(f"cannot read {archive} as an image archive: {exc}") from None


class DockerArchive:
    """``docker-archive:FILE`` (read): a ``docker save`` tar, presented as an OCI image."""

    def __init__(self, file: Path):
        self.file = Path(file)
        try:
            # read lazily for the image's life
            self.tar = tarfile.open(self.file, tarinfo=SafeTarInfo)  # noqa: SIM115
            member = self.tar.getmember("manifest.json")
            check_doc_size(member.size, f"{self.file}: manifest.json")
            manifest = json.loads(read_doc(self.tar.extractfile(member), "manifest.json"))
        except (tarfile.TarError, OSError, KeyError, ValueError, RecursionError) as exc:
            raise ImageError(f"{self.file} is not a docker save archive ({exc})") from None
        if not isinstance(manifest, list) or not manifest:
            raise ImageError(f"{self.file}: manifest.json lists no image")
        self.entry = manifest[0]
        self._paths: dict[str, str] = {}

    def describe(self) -> str:
        return f"docker-archive:{self.file}"

    def _member_digest(self, name: str) -> tuple[str, int]:
        f = self.tar.extractfile(name)
        if f is None:
            raise ImageError(f"{self.file}: {name} is missing")
        sha, size = hashlib.sha256(), 0
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
        digest = "sha256:" + sha.hexdigest()
        self._paths[digest] = name
        return digest, size

    def manifest(self) -> tuple[bytes, str]:
        config, csize = self._member_digest(self.entry["Config"])
        layers = []
        for name in self.entry.get("Layers", []):
            d, s = self._member_digest(name)
            layers.append(
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}
            )
        m = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": config, "size": csize},
            "layers": layers,
        }
        return canonical(m), MT_MANIFEST

    def open_blob(self, digest: str, size: int | None = None) -> BinaryIO:
        if digest not in self._paths:
            self.manifest()
        f = self.tar.extractfile(self._paths[digest])
        return VerifyingReader(f, digest, size, f"{self._paths[digest]} of {self.file}")  # type: ignore[arg-type, return-value]
