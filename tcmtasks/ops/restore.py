"""Operations on a node: what this host is (gpu), and restoring images (pull, extract)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache.entries import Entry
from ..cache.roots import Root, discover
from ..errors import NoGpu, TcmError, UsageError
from ..extract import LOCK_TIMEOUT, MAX_TOTAL, RestoreReport, default_destinations
from ..extract import extract as extract_image
from ..gpuchoice import GpuChoice
from ..gpuprofile import GpuProfile, save
from ..index import Index
from ..oci.refs import ImageRef, parse
from ..oci.transfer import RegistryOptions
from ..producer import Producer, detect
from ..progress import Progress, ProgressEvent
from ..runtime import resolve
from ..selection import parse_size
from ..targets import Target, host_gpus, host_targets
from ..trust import TrustOptions, open_trusted
from ._common import DbPath, open_index

log = logging.getLogger(__name__)


@dataclass
class HostInfo:
    targets: list[Target]
    gpus: list[str]  # device names, in the order of ``targets``
    producer: Producer  # the Triton build and toolchain lookups here use
    runtime: str = "tcm's own environment"  # whose Triton and Python ``producer`` describes

    def to_dict(self) -> dict[str, Any]:
        return {
            "targets": [str(t) for t in self.targets],
            "gpus": self.gpus,
            "producer": self.producer.to_dict(),
            "runtime": self.runtime,
        }


def gpu(*, python: str | Path | None = None) -> HostInfo:
    """This host's GPU targets (nvidia-ml-py, amdsmi or the KFD sysfs), each with its own
    device's name, and the Triton build lookups will use: tcm's own, or ``python``'s."""
    targets, names = host_targets()
    if python is None:
        return HostInfo(targets, names, detect())
    rt = resolve(python=python)
    return HostInfo(targets, names, rt.producer, rt.source)


def save_gpu_profile(path: Path, *, python: str | Path | None = None) -> GpuProfile:
    """Record GPU 0 as the workload's torch and Triton see it (``python``, else tcm's own
    interpreter) into ``path``: what ``tcm warm --gpu-profile`` compiles for elsewhere."""
    from ..warm.child import run_child

    lines = run_child(
        "tcmtasks.warm.profile_child", [], dict(os.environ), what="recording the GPU profile",
        python=str(python) if python else None,
    )  # fmt: skip
    if not lines:
        raise UsageError("recording the GPU profile gave no result")
    profile = GpuProfile.from_dict(lines[-1], "the recorded profile")
    profile.recorded_by = f"tcm gpu --save-profile{f' --python {python}' if python else ''}"
    save(profile, path)
    return profile


def workload_runtime(
    python: str | Path | None, triton: str | None
) -> tuple[Producer, dict[str, Any]]:
    """The workload's runtime with this host's GPUs: what a restore selects for."""
    rt = resolve(python=python, triton=triton)
    targets, names = host_gpus()
    host = rt.producer
    host.gpus, host.targets = names, [str(t) for t in targets]
    return host, rt.to_dict()


def default_cache_dir() -> Path:
    """Where Triton itself looks: TRITON_CACHE_DIR, else $TRITON_HOME/.triton/cache, else
    ~/.triton/cache."""
    env = os.environ.get("TRITON_CACHE_DIR")
    if env:
        return Path(env)
    home = os.environ.get("TRITON_HOME") or os.path.expanduser("~")
    return Path(home) / ".triton" / "cache"


def _wanted(
    targets: list[Target] | None, all_targets: bool, gpus: list[str] | None, force: bool
) -> tuple[list[Target] | None, GpuChoice | None]:
    """The targets whose entries to keep (None: every one, or with ``gpus`` theirs) and whose
    Inductor/vLLM units (an image warmed for several GPUs): the GPUs named, else this host's
    (None: every GPU's)."""
    if all_targets and (targets or gpus):
        raise UsageError(
            f"--all and {'--target' if targets else '--gpu'} contradict each other: pick one"
        )
    if gpus:
        return targets or None, GpuChoice(tuple(gpus), named=True)
    if all_targets:
        return None, None
    choice = None if force else GpuChoice(tuple(host_gpus()[1]))
    if targets:
        return targets, choice
    found, _names = host_targets()
    if not found:
        raise NoGpu(
            "no GPU found on this host: name the targets to keep with "
            "--target (e.g. --target cuda:90), the GPU with --gpu NAME, or keep everything "
            "with --all"
        )
    return found, choice


@dataclass
class RestoreOptions:
    """The choices of a restore, as ``tcm pull`` and ``tcm extract`` take them as flags:
    where each part goes, what is kept, and how far the node trusts what the image says."""

    cache_dir: Path | None = None  # Triton entries (default: where Triton looks)
    inductor_dir: Path | None = None
    vllm_dir: Path | None = None
    targets: list[Target] | None = None
    all_targets: bool = False
    gpus: list[str] | None = None
    python: str | Path | None = None  # the workload's interpreter
    triton: str | None = None  # else its Triton version
    strict: bool = False
    overwrite: bool = False
    force: bool = False
    dry_run: bool = False
    max_size: int | str | None = None
    same_paths: bool = False
    same_paths_root: list[Path] | None = None
    lock_timeout: float = LOCK_TIMEOUT


def pull(
    ref: str | ImageRef,
    options: RestoreOptions | None = None,
    *,
    registry: RegistryOptions | None = None,
    trust: TrustOptions | None = None,
    local_only: bool = False,
    db: DbPath = None,
    progress: Progress | None = None,
) -> RestoreReport:
    """Restore an image where the workload will look (``options``, RestoreOptions, names
    each choice): Triton entries into ``cache_dir``
    (default: where Triton looks), an Inductor part into ``inductor_dir`` (default
    TORCHINDUCTOR_CACHE_DIR, else Inductor's own default) with its Triton entries in its
    ``triton/<device>`` dirs unless TRITON_CACHE_DIR is set, a vLLM part into ``vllm_dir``
    (default VLLM_CACHE_ROOT, else ~/.cache/vllm); ``same_paths`` restores parts to the
    producer's own paths, when they lie below ``inductor_dir``, ``vllm_dir`` or a
    ``same_paths_root``. Selects for the workload's runtime: ``python`` (that interpreter is
    asked for its Triton build, Python ABI and torch), else ``triton`` (a version), else the
    Triton tcm imports. Checks the image against it before downloading, keeps what will load
    and hit there (the host's GPUs unless ``targets`` or ``all_targets``; entries built by the
    same Triton build and Python ABI; parts whose torch, Python and GPU match; anything of a
    wanted target with ``force``), extracts safely, fixes the absolute paths the caches store,
    installs atomically, and indexes what arrived. From an image warmed for several GPUs it
    installs the Inductor and vLLM units of this host's GPU (their keys hold its name), or of
    ``gpus`` (names as ``tcm inspect`` shows them, or their start: ``nvidia-h100``; their
    targets' entries unless ``targets``), or of every GPU with ``all_targets`` or ``force``.
    The report says what was skipped, and why (entries the image's manifest already rules
    out are never downloaded to disk). Another tcm changing the same cache is waited for, up
    to ``lock_timeout`` seconds. Only what the node's policy.json accepts is installed
    (``trust`` names its files; signatures are checked on the manifest before any layer is
    fetched), through registries.conf's mirrors and locations."""
    o = options or RestoreOptions()
    parsed = parse(ref) if isinstance(ref, str) else ref
    if local_only and parsed.transport == "docker":
        raise UsageError("tcm extract reads local images; use tcm pull for docker://")
    wanted, choice = _wanted(o.targets, o.all_targets, o.gpus, o.force)
    dest = Path(o.cache_dir) if o.cache_dir is not None else default_cache_dir()
    dests = default_destinations(dest)
    if o.inductor_dir is not None:
        dests.inductor = Path(o.inductor_dir)
    if o.vllm_dir is not None:
        dests.vllm = Path(o.vllm_dir)
    for flag, where in (("-c", dests.triton), ("--inductor-dir", dests.inductor),
                        ("--vllm-dir", dests.vllm)):  # fmt: skip
        if where.exists() and not where.is_dir():
            raise UsageError(f"{where} is a file, not a directory: give a directory ({flag} DIR)")
    limit = parse_size(o.max_size) if isinstance(o.max_size, str) else (o.max_size or MAX_TOTAL)
    source = open_trusted(parsed, registry, trust)

    def bytes_done(n: int) -> None:
        if progress is not None:
            progress(ProgressEvent("extracting", n, None, "bytes"))

    host, runtime = workload_runtime(o.python, o.triton)
    ahead = _IndexAhead(db)
    installed: list[Entry] | None = None
    try:
        report = extract_image(
            source,
            dest,
            targets=wanted,
            host=host,
            runtime=runtime,
            dests=dests,
            strict=o.strict,
            overwrite=o.overwrite,
            force=o.force,
            same_paths=o.same_paths,
            dry_run=o.dry_run,
            max_total=limit,
            progress=bytes_done if progress is not None else None,
            gpus=choice,
            lock_timeout=o.lock_timeout,
            same_paths_roots=[
                Path(p)
                for p in (o.inductor_dir, o.vllm_dir, *(o.same_paths_root or []))
                if p is not None
            ],
            on_ready=None if o.dry_run else ahead.write,
        )
        installed = report.arrived if report.arrived_complete else None
    finally:
        recorded = ahead.end(installed)
    report.verified = list(getattr(source, "accepted_by", []))
    report.served_by = getattr(source, "served_by", "")
    if not o.dry_run:
        _index_arrivals(report, dest, db, recorded)
    return report


class _IndexAhead:
    """The arriving Triton entries' index rows, written and committed while the disk syncs
    what the extract staged, before the renames (the extract's main thread only waits
    there; the commit's checkpoint alone took 55 ms after the renames). Rows ahead of the
    entries are what any index is a moment after: the next refresh reads each entry whose
    fingerprint changed, and these rows have none. If the extract then installs less than it
    said (an install failed, or it raised), the roots are read again from disk at once."""

    def __init__(self, db: DbPath):
        self.db = db
        self.idx: Index | None = None
        self.roots: list[Root] = []
        self.expected: dict[str, set[str]] = {}

    def write(self, entries: list[Entry]) -> None:
        by_root = _by_root(entries)
        roots = discover([Path(p) for p in sorted(by_root)])  # (each dir exists: staged into)
        if sorted(str(r.path) for r in roots) != sorted(by_root) or any(
            r.kind != "triton" for r in roots
        ):
            return  # not each a plain Triton root: indexed afterwards, as it was
        try:
            self.idx = open_index(self.db)
            self.idx.record([(r, by_root[str(r.path)]) for r in roots])
        except TcmError:  # (a damaged or full index): said after the install, as it was
            if self.idx is not None:
                self.idx.close()
            self.idx = None
            return
        self.roots = roots
        self.expected = _keys(by_root)

    def end(self, installed: list[Entry] | None) -> set[str]:
        """The roots the index now has right (``write``'s): as recorded if ``installed``
        (what the extract installed; None when it failed) is what it was told, else read
        again from disk here; none if that failed."""
        if self.idx is None:
            return set()
        try:
            if installed is not None and _keys(_by_root(installed)) == self.expected:
                return set(self.expected)
            try:
                self.idx.update(self.roots)  # what is there, as a refresh would see it
            except TcmError as exc:  # (never hiding why the extract failed)
                log.warning("the index could not be brought up to date: %s", exc)
                return set()
            return set(self.expected)
        finally:
            self.idx.close()


def _by_root(entries: list[Entry]) -> dict[str, list[Entry]]:
    by_root: dict[str, list[Entry]] = {}
    for e in entries:
        by_root.setdefault(os.path.abspath(e.root), []).append(e)
    return by_root


def _keys(by_root: dict[str, list[Entry]]) -> dict[str, set[str]]:
    return {root: {e.key for e in es} for root, es in by_root.items()}


def _index_arrivals(report: RestoreReport, dest: Path, db: DbPath, recorded: set[str]) -> None:
    """Index what the restore installed: the Triton entries as judged where they now are
    (without reading them back; ``recorded``: roots _IndexAhead already has right), the parts'
    units, few, read from disk, and every root read when entries were judged from disk
    (HOLD_BUDGET spent)."""
    by_root = _by_root(report.arrived)
    for k in report.kept if not report.arrived_complete else []:
        by_root.setdefault(os.path.abspath(str(k["dest"])), [])  # read from disk
    arrived = {p.dest for p in report.parts if p.installed}
    if os.path.abspath(dest) not in by_root:
        arrived.add(dest)  # nothing new there: indexed as it is
    todo = [Path(p) for p in sorted(by_root) if p not in recorded]
    if not todo and not arrived:
        return  # (opening the index costs a checkpoint, with its fsyncs, when it closes)
    with open_index(db) as idx:
        read, judged_groups = [], []
        for root in discover(todo) if todo else []:
            judged = by_root.get(os.path.abspath(root.path))
            if judged and root.kind == "triton" and report.arrived_complete:
                judged_groups.append((root, judged))
            else:
                read.append(root)
        if judged_groups:
            idx.record(judged_groups)
        idx.update([r for r in read + discover(sorted(arrived)) if r.path.is_dir()])


def extract(
    ref: str | ImageRef,
    options: RestoreOptions | None = None,
    *,
    trust: TrustOptions | None = None,
    db: DbPath = None,
    progress: Progress | None = None,
) -> RestoreReport:
    """``pull`` for a local image (``oci:``, ``oci-archive:``, ``docker-archive:``)."""
    return pull(ref, options, local_only=True, trust=trust, db=db, progress=progress)
