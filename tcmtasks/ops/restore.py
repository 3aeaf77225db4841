"""Operations on a node: what this host is (gpu), and restoring images (pull, extract)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache.roots import discover
from ..errors import NoGpu, UsageError
from ..extract import MAX_TOTAL, RestoreReport
from ..extract import extract as extract_image
from ..oci.refs import ImageRef, parse
from ..oci.transfer import RegistryOptions, open_source
from ..producer import Producer, detect
from ..progress import Progress, ProgressEvent
from ..selection import parse_size
from ..targets import Target, host_targets
from ._common import DbPath, open_index


@dataclass
class HostInfo:
    targets: list[Target]
    gpus: list[str]  # device names, in the order of ``targets``
    producer: Producer  # the Triton build and toolchain lookups here use

    def to_dict(self) -> dict[str, Any]:
        return {
            "targets": [str(t) for t in self.targets],
            "gpus": self.gpus,
            "producer": self.producer.to_dict(),
        }


def gpu() -> HostInfo:
    """This host's GPU targets (nvidia-ml-py, amdsmi or the KFD sysfs) and Triton build."""
    targets, names = host_targets()
    return HostInfo(targets, names, detect())


def default_cache_dir() -> Path:
    """Where Triton itself looks: TRITON_CACHE_DIR, else $TRITON_HOME/.triton/cache, else
    ~/.triton/cache."""
    env = os.environ.get("TRITON_CACHE_DIR")
    if env:
        return Path(env)
    home = os.environ.get("TRITON_HOME") or os.path.expanduser("~")
    return Path(home) / ".triton" / "cache"


def _wanted_targets(targets: list[Target] | None, all_targets: bool) -> list[Target] | None:
    """The targets to keep (None: every one)."""
    if all_targets and targets:
        raise UsageError("--all and --target contradict each other: pick one")
    if all_targets:
        return None
    if targets:
        return targets
    found, _names = host_targets()
    if not found:
        raise NoGpu(
            "no GPU found on this host: name the targets to keep with "
            "--target (e.g. --target cuda:90), or keep everything with --all"
        )
    return found


def pull(
    ref: str | ImageRef,
    *,
    cache_dir: Path | None = None,
    targets: list[Target] | None = None,
    all_targets: bool = False,
    strict: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    max_size: int | str | None = None,
    registry: RegistryOptions | None = None,
    db: DbPath = None,
    progress: Progress | None = None,
) -> RestoreReport:
    """Restore an image into ``cache_dir`` (default: where Triton looks): check it against
    this host before downloading, keep the entries that will load and hit here (the host's
    GPUs unless ``targets`` or ``all_targets``), extract safely, rewrite group paths, install
    each entry atomically, and index what arrived. The report says what was skipped, why."""
    wanted = _wanted_targets(targets, all_targets)
    dest = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    limit = parse_size(max_size) if isinstance(max_size, str) else (max_size or MAX_TOTAL)
    source = open_source(ref, registry)

    def bytes_done(n: int) -> None:
        if progress is not None:
            progress(ProgressEvent("extracting", n, None, "bytes"))

    report = extract_image(
        source,
        dest,
        targets=wanted,
        host=detect(),
        strict=strict,
        overwrite=overwrite,
        dry_run=dry_run,
        max_total=limit,
        progress=bytes_done if progress is not None else None,
    )
    if not dry_run:
        with open_index(db) as idx:
            idx.update(discover([dest]))
    return report


def extract(
    ref: str | ImageRef,
    *,
    cache_dir: Path | None = None,
    targets: list[Target] | None = None,
    all_targets: bool = False,
    strict: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    max_size: int | str | None = None,
    db: DbPath = None,
    progress: Progress | None = None,
) -> RestoreReport:
    """``pull`` for a local image (``oci:``, ``oci-archive:``, ``docker-archive:``)."""
    parsed = parse(ref) if isinstance(ref, str) else ref
    if parsed.transport == "docker":
        raise UsageError("tcm extract reads local images; use tcm pull for docker://")
    return pull(
        parsed,
        cache_dir=cache_dir,
        targets=targets,
        all_targets=all_targets,
        strict=strict,
        overwrite=overwrite,
        dry_run=dry_run,
        max_size=max_size,
        db=db,
        progress=progress,
    )
