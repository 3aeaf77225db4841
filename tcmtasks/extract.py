"""Restore a cache image on a node: preflight, safe streaming extraction, relocation, install.

1. Preflight from the manifest and config alone: stop before any layer byte is fetched when no
   image target is a target of this host, and compare the image's producer (Triton build, Python
   ABI, ptxas) with the host's: keys cannot match across those (docs/cache-formats.md, "The key").
2. Stream the layer (verified against its digest as it goes) into a staging dir on the cache's
   filesystem. Only regular files under ``io.triton.cache/<KEY>/`` and
   ``io.triton.manifest/`` are accepted; ``..``, absolute names, links, devices and anything
   else stop the extraction, as do files over the size caps.
3. Per staged entry: keep it only for a wanted target and the host's Triton version, check it
   is complete (metadata, binary, group), rewrite its group to the final location (Triton stores
   absolute paths: docs/cache-formats.md, "Groups and the hit rule"), and rename it into the cache
   in one step. Existing entries are left alone unless ``overwrite``.

A process killed while streaming leaves the cache exactly as it was (entries only ever arrive
by rename); the staging dir it leaves is removed by the next extraction.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tarfile
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache.entries import Entry, EntryKind, binary_suffixes, scan_entry
from .cache.groups import group_filename, read_group, write_group
from .cache.lock import locked
from .cache.remove import TRASH
from .errors import HostileImage, ImageError, IncompatibleImage
from .oci.image import LABEL_PRODUCER, LABEL_SUMMARY
from .oci.inspect import decompressed, json_label, read_entry_manifest, read_labels
from .oci.layout import CHUNK
from .producer import Producer, mismatches
from .targets import Target

CACHE_PREFIX = "io.triton.cache/"
MANIFEST_PREFIX = "io.triton.manifest/"
STAGING_PREFIX = ".tcm-staging-"
MAX_FILE = 1 << 30  # no kernel file comes near 1 GiB
MAX_TOTAL = 64 << 30
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{8,128}")
_SAFE_FILE = re.compile(r"[A-Za-z0-9_.+-][A-Za-z0-9_.+-]{0,254}")


@dataclass
class RestoreReport:
    reference: str
    cache_dir: str
    host_targets: list[str]
    image_targets: list[str]
    producer_warnings: list[str] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _targets_of(labels: dict[str, str]) -> list[Target]:
    summary = json_label(labels.get(LABEL_SUMMARY)) or {}
    out = []
    for t in summary.get("targets", []):
        found = Target.from_metadata(t)
        if found:
            out.append(found)
    return out


def preflight(
    source: Any, targets: list[Target] | None, host: Producer, *, strict: bool
) -> tuple[dict[str, Any], list[Target], list[str]]:
    """Check labels against the host before downloading: (manifest, image targets, warnings).
    ``targets`` None means every target is wanted (--all)."""
    manifest, _config, labels = read_labels(source)
    image_targets = _targets_of(labels)
    if targets is not None and image_targets and not set(image_targets) & set(targets):
        raise IncompatibleImage(
            f"{source.describe()} holds kernels for {', '.join(map(str, image_targets))}; this "
            f"host needs {', '.join(map(str, targets)) or 'nothing (no GPU found)'}: nothing to "
            "download (use --target or --all to choose otherwise)"
        )
    warnings = mismatches(Producer.from_dict(json_label(labels.get(LABEL_PRODUCER))), host)
    if warnings and strict:
        raise IncompatibleImage(
            "the image's kernels cannot hit on this host: "
            + "; ".join(warnings)
            + " (drop --strict to extract anyway)"
        )
    return manifest, image_targets, warnings


def _check_member(m: tarfile.TarInfo, total: int, max_total: int) -> tuple[str, str] | None:
    """(key, file) for a cache file to write, None for dirs and the manifest; raise for the
    rest."""
    name = m.name
    while name.startswith("./"):
        name = name[2:]
    parts = name.rstrip("/").split("/")
    if name.startswith("/") or ".." in parts or "" in parts[:-1]:
        raise HostileImage(f"layer entry {m.name!r} escapes the cache (absolute or '..')")
    if not (m.isfile() or m.isdir()):
        kind = (
            "a symlink"
            if m.issym()
            else "a hard link"
            if m.islnk()
            else ("a device" if m.isdev() else "not a regular file")
        )
        raise HostileImage(f"layer entry {m.name!r} is {kind}; cache images hold only files")
    if not (
        name.startswith(CACHE_PREFIX)
        or name.startswith(MANIFEST_PREFIX)
        or name.rstrip("/") in (CACHE_PREFIX.rstrip("/"), MANIFEST_PREFIX.rstrip("/"))
    ):
        raise HostileImage(
            f"layer entry {m.name!r} is outside {CACHE_PREFIX} and {MANIFEST_PREFIX}"
        )
    if m.isdir() or name.startswith(MANIFEST_PREFIX):
        return None
    if len(parts) != 3 or not _SAFE_KEY.fullmatch(parts[1]) or not _SAFE_FILE.fullmatch(parts[2]):
        raise HostileImage(f"layer entry {m.name!r} is not {CACHE_PREFIX}<KEY>/<FILE>")
    if m.size > MAX_FILE:
        raise HostileImage(f"layer entry {m.name!r} is {m.size} bytes, over the 1 GiB cap")
    if total + m.size > max_total:
        raise HostileImage(f"the layer unpacks to more than {max_total} bytes (--max-size)")
    return parts[1], parts[2]


def stream_into(
    source: Any,
    manifest: dict[str, Any],
    staging: Path,
    *,
    max_total: int = MAX_TOTAL,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Unpack every layer's cache files into ``staging``; returns bytes written. The layer's
    digest is checked at its end: on a mismatch everything staged is void."""
    total = 0
    for layer in manifest.get("layers", []):
        raw = source.open_blob(layer["digest"], layer.get("size"))
        try:
            stream = decompressed(raw, layer.get("mediaType", ""))
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for m in tar:
                    where = _check_member(m, total, max_total)
                    if where is None:
                        continue
                    key, name = where
                    (staging / key).mkdir(exist_ok=True)
                    src = tar.extractfile(m)
                    with open(staging / key / name, "xb") as out:
                        while chunk := src.read(CHUNK):  # type: ignore[union-attr]
                            out.write(chunk)
                    total += m.size
                    if progress:
                        progress(total)
            while stream.read(CHUNK):  # the rest (tar padding, gzip trailer)
                pass
            while raw.read(CHUNK):  # ...so that the digest check runs now
                pass
        except FileExistsError as exc:
            raise HostileImage(f"layer holds {exc.filename} twice") from None
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise ImageError(
                f"the layer of {source.describe()} is corrupt ({exc}); nothing was installed"
            ) from None
        except OSError as exc:
            if exc.filename is not None:
                raise  # a local write failed (disk full...): not the image's fault
            raise ImageError(
                f"the layer of {source.describe()} is corrupt ({exc}); nothing was installed"
            ) from None
        finally:
            raw.close()
    return total


def _finish(entry: Entry, final_dir: Path) -> str | None:
    """Make a staged entry hit at ``final_dir``: rewrite its group; return why not, if not."""
    if entry.kind != EntryKind.KERNEL or not entry.name:
        return f"not a kernel entry ({entry.kind})"
    if entry.metadata is None:
        return "incomplete: no readable metadata"
    try:
        children = read_group(entry.path / group_filename(entry.name))
    except (OSError, ValueError) as exc:
        return f"incomplete: no usable group ({exc})"
    present = {c for c in children if (entry.path / c).is_file()}
    if f"{entry.name}.json" not in present:
        return "incomplete: the group does not list the metadata"
    if not any(c.endswith(binary_suffixes(entry.target)) for c in present):
        return "incomplete: no kernel binary"
    write_group(entry.path, entry.name, {c: str(final_dir / c) for c in sorted(present)})
    return None


def purge_stale_staging(cache_dir: Path) -> int:
    """Remove staging dirs left by killed extractions (their process is gone)."""
    removed = 0
    for d in cache_dir.glob(f"{STAGING_PREFIX}*"):
        m = re.match(rf"{re.escape(STAGING_PREFIX)}(\d+)-", d.name)
        if m and not _alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def extract(
    source: Any,
    cache_dir: Path,
    *,
    targets: list[Target] | None,
    host: Producer,
    strict: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    max_total: int = MAX_TOTAL,
    progress: Callable[[int], None] | None = None,
) -> RestoreReport:
    """Preflight, then (unless ``dry_run``) stream, select, relocate and install."""
    t0 = time.perf_counter()
    manifest, image_targets, warnings = preflight(source, targets, host, strict=strict)
    report = RestoreReport(
        source.describe(),
        str(cache_dir),
        [str(t) for t in targets or []],
        [str(t) for t in image_targets],
        warnings,
        dry_run=dry_run,
    )
    if dry_run:
        for row in read_entry_manifest(source, manifest) or []:
            t = Target.from_metadata(row)
            why = _why_skip(t, row.get("triton_version"), targets, host)
            item = {
                "key": row.get("key") or row.get("dummy_key") or row.get("hash"),
                "name": row.get("name"),
                "target": str(t) if t else None,
            }
            (report.skipped if why else report.kept).append(
                {**item, "reason": why} if why else item
            )
        report.seconds = time.perf_counter() - t0
        return report
    cache_dir.mkdir(parents=True, exist_ok=True)
    with locked(cache_dir):
        purge_stale_staging(cache_dir)
        staging = cache_dir / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            stream_into(source, manifest, staging, max_total=max_total, progress=progress)
            for key in sorted(os.listdir(staging)):
                entry = scan_entry(staging, key)
                item = {
                    "key": key,
                    "name": entry.name,
                    "target": str(entry.target) if entry.target else None,
                }
                why = _why_skip(entry.target, entry.triton_version, targets, host)
                final = cache_dir / key
                if why is None and _occupied(final) and not overwrite:
                    why = "already in the cache (--overwrite replaces it)"
                if why is None:
                    why = _finish(entry, final)
                if why is not None:
                    report.skipped.append({**item, "reason": why})
                    continue
                _install(staging / key, final, overwrite)
                report.kept.append(item)
                report.bytes += entry.size
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    return report


def _why_skip(
    target: Target | None, version: str | None, targets: list[Target] | None, host: Producer
) -> str | None:
    if targets is not None and target not in targets:
        return f"target {target or 'unknown'} is not one of {', '.join(map(str, targets))}"
    if host.triton_version and version and version != host.triton_version:
        return f"built by Triton {version}; this host has {host.triton_version} (a miss)"
    return None


def _install(staged: Path, final: Path, overwrite: bool) -> None:
    """One rename puts the entry in place; an entry it replaces leaves through the trash."""
    if _occupied(final):
        if not overwrite:
            return
        trash = final.parent / TRASH
        trash.mkdir(exist_ok=True)
        old = trash / f"{final.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        os.rename(final, old)
        os.rename(staged, final)
        shutil.rmtree(old, ignore_errors=True)
        return
    # rename() replaces an empty dir (Triton leaves one per missed lookup) in the same step
    with contextlib.suppress(FileExistsError, OSError):
        os.rename(staged, final)


def _occupied(path: Path) -> bool:
    try:
        return any(path.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return path.exists()
