"""Restore a cache image on a node: preflight, safe streaming extraction, relocation, install.

1. Preflight from the manifest and config alone: stop before any layer byte is fetched when no
   image target is a target of this host, and compare the image's producer (Triton build, Python
   ABI, ptxas) with the host's: keys cannot match across those (docs/cache-formats.md, "The key").
2. Stream the layer (verified against its digest as it goes). The in-layer manifest comes first:
   it says which parts the image holds (Inductor's and vLLM's caches beside Triton's entries,
   ``tcmtasks.parts``) and which Triton root each entry belongs to. Each member is staged under
   the destination it is for (a dir on that destination's filesystem). Only regular files with
   plain names under ``io.triton.cache/<KEY>/``, ``io.triton.manifest/`` and a known part's
   prefix are accepted; ``..``, absolute names, links, devices and anything else stop the
   extraction, as do files over the size caps. The layer is inflated on a second thread and
   its headers parsed in place (oci/tarread.py); the accepted files are written by GNU tar
   in a second process where the node has it (stagewrite.py; a Triton file with a plain
   header goes to it as the layer holds it, header and all); each entry's JSON files are
   held in memory as they pass, so the entry is judged without reading it back, and its
   group is written once, with its final paths.
3. Triton entries (judging.py, install.py): keep one only for a wanted target and the host's
   Triton version, check it is complete (metadata, binary, group), rewrite its group to the
   final location (Triton stores absolute paths: docs/cache-formats.md, "Groups and the hit
   rule"), and rename it into the cache in one step. Parts: keep one only when its producer's
   torch, Python and GPU match the host's; fix the paths its kind knows how to fix, and install
   it unit by unit (a whole FX-graph or AOTAutograd entry, else a file), each in one rename.
   Existing entries and units are left alone unless ``overwrite``.

The index records the entries as judged at their place (``Index.record``), with empty
fingerprints (the next refresh reads them from disk), through ``on_ready``: ops.pull writes
and commits the rows while the disk syncs the staged files, before the renames, and reads the
roots again from disk if fewer entries were then installed.

A process killed while streaming leaves every destination exactly as it was (things only ever
arrive by rename); the staging dirs it leaves are removed by the next extraction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import parts as cache_parts
from .atomic import Flush, sync_filesystem
from .cache.entries import (
    Entry,
    EntryKind,
    FileInfo,
    Known,
    file_kind,
)
from .cache.groups import (
    kernel_name_of_group,
)
from .errors import (
    HostileImage,
    IncompatibleImage,
    UsageError,
)
from .gpuchoice import GpuChoice, choose_gpus, owners, served_gpus
from .install import Budget, Ready, Unit, install, occupied, prepare_part, producer_root
from .judging import (
    Judged,
    check_group_names,
    is_module_row,
    judge_at,
    module_skip,
    why_skip,
)
from .layerstream import (
    CACHE_PREFIX,
    MAX_TOTAL,
    Layout,
    build_of,
    rows_of,
    stream_into,
)
from .oci.image import LABEL_PARTS, LABEL_PRODUCER, LABEL_SIZE, LABEL_SUMMARY, Dest
from .oci.inspect import json_label, read_labels, read_layer_manifest
from .producer import Producer, libdir_of, mismatches
from .restoreplan import TRITON, Destinations, PartPlan, RestoreReport
from .stagewrite import Where, Writer, open_writer
from .staging import Staging, purge_stale_staging
from .targets import Target

__all__ = [
    "MAX_TOTAL", "Destinations", "PartPlan", "RestoreReport", "build_of", "extract",
    "purge_stale_staging", "why_skip",
]  # fmt: skip


def _targets_of(labels: dict[str, str]) -> list[Target]:
    summary = json_label(labels.get(LABEL_SUMMARY)) or {}
    out = []
    for t in summary.get("targets", []) if isinstance(summary, dict) else []:
        found = Target.from_metadata(t)
        if found:
            out.append(found)
    return out


@dataclass
class Preflight:
    """What the labels say, judged for this node before any layer byte is fetched."""

    manifest: dict[str, Any]
    image_targets: list[Target]
    warnings: list[str]
    producer: Producer | None
    targets: list[Target] | None  # the entries' targets to keep (None: every one)
    served: dict[str, str]  # the GPUs a fleet image serves: name -> target
    gpus: list[str] | None  # whose units to install (None: every GPU's)


def preflight(
    source: Any,
    targets: list[Target] | None,
    host: Producer,
    *,
    strict: bool,
    gpus: GpuChoice | None = None,
) -> Preflight:
    """Check labels against the host before downloading. ``targets`` None means every target
    is wanted (--all), or, with GPUs named by the user, those GPUs' targets."""
    manifest, _config, labels = read_labels(source)
    served = served_gpus(labels)
    chosen, targets = choose_gpus(source.describe(), served, gpus, targets)
    image_targets = _targets_of(labels)
    if targets is not None and image_targets and not set(image_targets) & set(targets):
        raise IncompatibleImage(
            f"{source.describe()} holds kernels for {', '.join(map(str, image_targets))}; this "
            f"host needs {', '.join(map(str, targets)) or 'nothing (no GPU found)'}: nothing to "
            "download (use --target or --all to choose otherwise)"
        )
    producer = Producer.from_dict(json_label(labels.get(LABEL_PRODUCER)))
    warnings = mismatches(producer, host)
    if warnings and strict:
        raise IncompatibleImage(
            "the image's kernels cannot hit on this host: "
            + "; ".join(warnings)
            + " (drop --strict to extract anyway)"
        )
    return Preflight(manifest, image_targets, warnings, producer, targets, served, chosen)


def part_mismatch(
    image: Producer | None, host: Producer, targets: list[Target] | None
) -> str | None:
    """Why an Inductor or vLLM part built by ``image`` cannot be used by ``host``: their keys
    hold the torch version, the Python build and the GPU's name (docs/cache-formats.md,
    "torch.compile"), so any difference makes every graph a miss."""
    if image is None:
        return None
    for name, label in (("torch", "torch"), ("python", "Python"), ("triton_version", "Triton")):
        a, b = getattr(image, name), getattr(host, name)
        if a and b and a != b:
            return f"built with {label} {a}; this host has {b} (every graph would miss)"
    if image.gpus and host.gpus and not set(image.gpus) & set(host.gpus):
        return (
            f"built on {', '.join(sorted(set(image.gpus)))}; this host has "
            f"{', '.join(sorted(set(host.gpus)))} (the keys hold the GPU's name)"
        )
    if image.targets and targets is not None and not set(image.targets) & {str(t) for t in targets}:
        return f"built for {', '.join(image.targets)}, not one of {', '.join(map(str, targets))}"
    return None


#: How long a restore waits, by default, for another tcm changing a destination it writes to
LOCK_TIMEOUT = 300.0

#: The JSON files (metadata, groups) an extract holds in memory to judge entries without
#: reading them back: 2,000 real kernels hold under 1 MiB, 20,000 large ones ~100 MiB. Past
#: this, the rest are read back from disk and the index reads every arrived entry itself.
HOLD_BUDGET = 32 << 20


@dataclass
class _Run:
    """One restore's choices and state, as the streaming and install steps share them."""

    layout: Layout
    staging: Staging
    dests: Destinations
    targets: list[Target] | None
    host: Producer
    report: RestoreReport
    overwrite: bool
    force: bool
    max_total: int
    #: told the Triton entries about to be installed, once judged, while the disk syncs
    #: what was staged (before the renames): ops.pull writes their index rows then
    on_ready: Callable[[list[Entry]], None] | None = None
    #: the names in each destination root, listed once (without its lock, so possibly stale:
    #: a name found is checked again, and an entry staged although another tcm has since
    #: installed it is skipped when judged, under the lock)
    listed: dict[Path, frozenset[str]] = field(default_factory=dict)
    #: the staging dir of each place an entry's first destination names
    staging_of: dict[Dest, str] = field(default_factory=dict)

    def occupied(self, root: Path, key: str) -> bool:
        names = self.listed.get(root)
        if names is None:
            try:
                names = self.listed[root] = frozenset(os.listdir(root))
            except OSError:  # not listed: install looks for itself
                return False
        return key in names and occupied(root / key)

    def staging_for(self, dest: Dest) -> str:
        where = self.staging_of.get(dest)
        if where is None:
            where = self.staging_of[dest] = str(self.staging.dir_for(*self.dests.split(dest)))
        return where


def _skipped_unstaged(run: _Run, key: str) -> bool:
    """Whether the manifest's row already says this entry stays out (another target or
    build, or already at every place it goes): then none of its files is staged, so a
    restore with nothing new writes nothing. Rows that say too little (MCV's) are judged
    after staging, from the entry's own metadata."""
    layout, dests, report = run.layout, run.dests, run.report
    row = layout.rows.get(key)
    if row is None:
        return False
    target = Target.from_metadata(row)
    item = {"key": key, "name": row.get("name"), "target": str(target) if target else None}
    why_module = module_skip([str(f) for f in row.get("files") or []], run.host, run.force) if (
        target is None and is_module_row(row)
    ) else None  # fmt: skip
    if why_module is not None:
        report.skipped.append({**item, "reason": why_module})
        return True
    if target is not None:
        version = row.get("triton_version")
        why = why_skip(target, version if isinstance(version, str) else None, run.targets,
                       run.host, layout.builds.get(key, {}), run.force)  # fmt: skip
        if why is not None:
            report.skipped.append({**item, "reason": why})
            return True
    if run.overwrite:
        return False
    places = list(dict.fromkeys(dests.split(d) for d in layout.dests.get(key, [TRITON])))
    roots = [named / rel if rel else named for named, rel in places]
    if not all(run.occupied(root, key) for root in roots):
        return False
    why = "already in the cache (--overwrite replaces it)"
    report.skipped += [{**item, "dest": str(root), "reason": why} for root in roots]
    return True


def _write_group(judged: Judged, here: Path, groups: Writer) -> None:
    """Written once, in place: nothing reads a staging dir (synced with the batch)."""
    if judged.text is None:
        return  # a driver helper has no group
    if judged.held:  # never written: new
        groups.write((str(here.parent), f"{here.name}/{judged.group}"), (judged.text,),
                     len(judged.text))  # fmt: skip
    else:
        (here / judged.group).write_bytes(judged.text)


def extract(
    source: Any,
    cache_dir: Path,
    *,
    targets: list[Target] | None,
    host: Producer,
    dests: Destinations | None = None,
    strict: bool = False,
    overwrite: bool = False,
    force: bool = False,
    same_paths: bool = False,
    dry_run: bool = False,
    max_total: int = MAX_TOTAL,
    progress: Callable[[int], None] | None = None,
    runtime: dict[str, Any] | None = None,
    gpus: GpuChoice | None = None,
    same_paths_roots: list[Path] | None = None,
    lock_timeout: float = LOCK_TIMEOUT,
    on_ready: Callable[[list[Entry]], None] | None = None,
) -> RestoreReport:
    """Preflight, then (unless ``dry_run``) stream, select, relocate and install.

    ``cache_dir`` receives plain Triton entries; ``dests`` says where Inductor's and vLLM's
    parts (and their Triton entries) go, by default where this process's environment says a
    workload looks; ``same_paths`` restores parts to the producer's own paths; ``host`` is the
    workload's runtime (its Triton, Python ABI, torch, GPUs): entries and parts built for
    another are skipped with their reason, unless ``force``; ``gpus``: whose units of an image
    warmed for several GPUs to install (None: every GPU's); ``lock_timeout``: how long to
    wait for another tcm changing a destination (pods on one node start together);
    ``on_ready``: told the Triton entries to be installed once judged, before they are
    published (not when some were judged from disk: ``arrived_complete``)."""
    t0 = time.perf_counter()
    checked = preflight(source, targets, host, strict=strict, gpus=gpus)
    manifest, image_targets, warnings = checked.manifest, checked.image_targets, checked.warnings
    producer, targets = checked.producer, checked.targets
    if checked.served:  # the units say which GPU they serve: the chosen ones, not the host's
        host = dataclasses.replace(host, gpus=list(checked.gpus or []))
    max_total = min(max_total, _declared_limit(source))
    if dests is None:
        dests = default_destinations(cache_dir)
    report = RestoreReport(
        source.describe(),
        str(cache_dir),
        [str(t) for t in targets or []],
        [str(t) for t in image_targets],
        warnings,
        dry_run=dry_run,
        runtime=runtime or host.to_dict(),
        image_gpus=sorted(checked.served),
        gpus=checked.gpus,
    )
    keep = frozenset(checked.gpus) if checked.gpus is not None else None

    def make_plan(p: dict[str, Any]) -> PartPlan:
        kind, mount = str(p["kind"]), str(p.get("mount") or "")
        if mount and not cache_parts.check_rel(mount):
            raise HostileImage(f"the in-layer manifest names a bad mount: {mount!r:.80}")
        source_dir = str(p.get("source") or "")
        root = producer_root(source_dir, mount) if same_paths else dests.kind_root(kind)
        if same_paths and not root:
            raise IncompatibleImage(f"the image does not say where its {kind} part was made")
        if same_paths:
            _check_same_path(kind, str(root), same_paths_roots or [])
        if same_paths:  # its Triton entries follow it to the producer's path
            setattr(dests, kind, Path(root))
        plan = PartPlan(kind, cache_parts.prefix_of(kind), source_dir, mount, Path(root) / mount)
        plan.owners, plan.keep_gpus = owners(p.get("gpus")), keep
        why = part_mismatch(producer, host, targets)
        if why and not force:
            plan.skipped = why + " (--force installs it anyway)"
        elif why:
            report.producer_warnings.append(f"{kind} part installed although {why} (--force)")
        elif producer is None:
            report.producer_warnings.append(
                f"the image has no producer record: whether its {kind} part fits this host's "
                "torch and GPU is unknown"
            )
        report.parts.append(plan)
        return plan

    layout = Layout()
    if dry_run:
        _dry_run(source, manifest, layout, make_plan, targets, host, dests, report, force)
        report.seconds = time.perf_counter() - t0
        return report
    with contextlib.ExitStack() as stack:
        staging = Staging(stack, lock_timeout)
        try:
            run = _Run(layout, staging, dests, targets, host, report, overwrite, force, max_total,
                       on_ready)  # fmt: skip
            _stream_and_install(source, manifest, run, make_plan, progress)
        finally:
            staging.cleanup()
    report.seconds = time.perf_counter() - t0
    return report


#: How far a layer may unpack past what its labels declare (group files are rewritten, and
#: tar and manifest overheads are not counted in the labels).
SLACK = 16 << 20


def _declared_limit(source: Any) -> int:
    """What the image says it unpacks to, plus slack: a layer that expands past it (a gzip
    bomb) stops there. Unbounded (``MAX_TOTAL``) for images that declare nothing."""
    _manifest, _config, labels = read_labels(source)
    size = labels.get(LABEL_SIZE, "")
    if not size.isdigit():
        return MAX_TOTAL
    total = int(size)
    parts = json_label(labels.get(LABEL_PARTS))
    if isinstance(parts, dict):
        total += sum(int(p.get("bytes") or 0) for p in parts.values() if isinstance(p, dict))
    return total + total // 10 + SLACK


def default_destinations(cache_dir: Path) -> Destinations:
    from .parts import inductor, vllm

    return Destinations(
        Path(cache_dir),
        inductor.default_dest(),
        vllm.default_dest(),
        triton_env=bool(os.environ.get("TRITON_CACHE_DIR")),
    )


def _check_same_path(kind: str, root: str, allowed: list[Path]) -> None:
    """``--same-paths`` writes where the image says its part was made: only below a dir the
    user named (--inductor-dir, --vllm-dir, --same-paths-root), and never through ``..``."""
    if os.path.normpath(root) != root.rstrip("/") or "/../" in f"{root}/":
        raise HostileImage(f"the image's {kind} part was made at {root!r}: not a plain path")
    here = os.path.realpath(root)
    for base in allowed:
        real = os.path.realpath(base)
        if here == real or here.startswith(real.rstrip("/") + "/"):
            return
    named = ", ".join(str(b) for b in allowed) or "none"
    raise UsageError(
        f"--same-paths would restore the {kind} part to {root}, the producer's path, which is "
        f"under no dir you named ({named}): add --same-paths-root DIR for a dir above it"
    )


def _dry_run(
    source: Any,
    manifest: dict[str, Any],
    layout: Layout,
    make_plan: Callable[[dict[str, Any]], PartPlan],
    targets: list[Target] | None,
    host: Producer,
    dests: Destinations,
    report: RestoreReport,
    force: bool,
) -> None:
    doc = read_layer_manifest(source, manifest)
    if doc is not None:
        layout.read(json.dumps(doc).encode(), make_plan)
    for row in rows_of(doc):
        t = Target.from_metadata(row)
        if t is None and is_module_row(row):
            why = module_skip([str(f) for f in row.get("files") or []], host, force)
        else:
            why = why_skip(t, row.get("triton_version"), targets, host, build_of(row), force)
        key = str(row.get("key") or row.get("dummy_key") or row.get("hash"))
        item = {"key": key, "name": row.get("name"), "target": str(t) if t else None}
        item["dests"] = [str(dests.root_for(d)) for d in layout.dests.get(key, [TRITON])]
        (report.skipped if why else report.kept).append({**item, "reason": why} if why else item)
    for p in doc.get("parts", []) if isinstance(doc, dict) else []:
        plan = layout.parts.get(cache_parts.prefix_of(str(p.get("kind"))))
        if plan is not None and isinstance(p.get("files"), int):
            plan.files, plan.bytes = p["files"], int(p.get("bytes") or 0)
            left = sum(1 for unit in plan.owners if not plan.wants(unit))
            plan.installed = 0 if plan.skipped else int(p.get("units") or 0) - left


def _stream_and_install(
    source: Any,
    manifest: dict[str, Any],
    run: _Run,
    make_plan: Callable[[dict[str, Any]], PartPlan],
    progress: Callable[[int], None] | None,
) -> None:
    layout, staging, dests, report = run.layout, run.staging, run.dests, run.report
    staged_keys: dict[str, Path] = {}  # key -> staged dir
    roots: dict[str, str] = {}  # key -> the staging dir holding it
    known: dict[str, Known] = {}  # key -> its files, and its JSON files' bytes
    seen: set[tuple[str, str]] = set()
    now = time.time()

    passed: set[str] = set()  # keys skipped from their manifest row: never staged

    def place(area: str, first: str, rest: str, size: int) -> Where | None:
        if area == CACHE_PREFIX:
            key = first
            if key in passed:
                return None
            if key not in staged_keys and _skipped_unstaged(run, key):
                passed.add(key)
                return None
            if key not in staged_keys:  # (its dir is made with its first file)
                roots[key] = run.staging_for(layout.dests.get(key, [TRITON])[0])
                staged_keys[key] = Path(roots[key], key)
                known[key] = Known([], {})
            if (key, rest) in seen:  # (a held file is never written: O_EXCL would not see it)
                raise HostileImage(f"layer holds {CACHE_PREFIX}{key}/{rest} twice")
            seen.add((key, rest))
            known[key].files.append(FileInfo(rest, file_kind(rest), size, now))
            return (roots[key], f"{key}/{rest}")
        plan = layout.parts[area]
        if plan.skipped or not plan.wants(cache_parts.unit_of(rest)):
            return None
        plan.files += 1
        return (str(staging.dir_for(dests.kind_root(plan.kind))), f"{area.rstrip('/')}/{rest}")

    held = 0

    def hold(where: Where, data: bytes) -> bool:
        nonlocal held
        if held + len(data) > HOLD_BUDGET:  # a huge cache: judged from disk, memory flat
            report.arrived_complete = False
            return False
        held += len(data)
        key, name = where[1].split("/")
        known[key].data[name] = data
        return kernel_name_of_group(name) is not None  # a group: written by _write_group

    with open_writer() as writer:  # every file on disk when the block ends
        written = stream_into(
            source,
            manifest,
            layout,
            place,
            max_total=run.max_total,
            progress=progress,
            on_manifest=lambda data: layout.read(data, make_plan),
            hold=hold,
            writer=writer,
        )
    for key in staged_keys:  # all checked before anything is installed
        check_group_names(key, known[key], staged_keys[key])
    # The layer's files start on their way to the disk while the entries are judged (the
    # kernel's part of the sync runs beside this thread's Python); the sync below, which
    # publishing waits for, then has only the group files left to write.
    early = Flush(list(staging.dirs.values()))
    budget = Budget(run.max_total, written)
    ready: list[Ready] = []
    run.listed.clear()  # listed again, now under the roots' locks
    with open_writer() as groups:  # written beside the judging, by tar where there is one
        for key in sorted(staged_keys):
            ready += _prepare_triton(run, key, staged_keys[key], known.pop(key), budget, groups)
    # Every part is prepared (paths fixed, every destination dir made and checked) before
    # anything is installed: an image's selected parts arrive all, or none of them.
    units: list[Unit] = []
    for plan in layout.parts.values():
        if not plan.skipped:
            staged = staging.dir_for(dests.kind_root(plan.kind)) / plan.prefix.rstrip("/")
            units += prepare_part(plan, staged, run.overwrite)
    if run.on_ready is not None and report.arrived_complete and ready:
        run.on_ready([r.entry for r in ready])  # (while the sync started above runs)
    # Everything staged is made durable at once, before the renames that publish it: an entry
    # Triton can see never has a file still in flight (one syncfs, not an fsync per entry).
    early.wait()
    for d in staging.dirs.values():
        sync_filesystem(d)
    for r in ready:
        listed = run.listed.get(r.final.parent)  # under the lock, when judged
        absent = listed is not None and r.final.name not in listed
        failed = install(r.staged, r.final, run.overwrite, absent=absent)
        if failed is not None:
            report.failed.append({**r.item, "dest": str(r.final.parent), "reason": failed})
            continue
        report.kept.append({**r.item, "dest": str(r.final.parent)})
        if report.arrived_complete:
            report.arrived.append(r.entry)
        report.bytes += r.size
    for u in units:
        failed = install(u.staged, u.final, run.overwrite, trash=u.trash)
        if failed is not None:
            u.plan.failed.append(f"{u.name}: {failed}")
            continue
        u.plan.installed += 1
        u.plan.bytes += u.size
        report.bytes += u.size


def _prepare_triton(
    run: _Run, key: str, staged: Path, known: Known, budget: Budget, groups: Writer
) -> list[Ready]:
    """Judge a staged entry for this node and finish a copy for each root it goes to (its
    group, with the paths of its place, handed to ``groups``)."""
    layout, dests, host, report = run.layout, run.dests, run.host, run.report
    places = list(dict.fromkeys(dests.split(d) for d in layout.dests.get(key, [TRITON])))
    roots = [named / rel if rel else named for named, rel in places]
    judged = judge_at(roots[0] / key, known, staged)
    entry = judged.entry
    item = {"key": key, "name": entry.name, "target": str(entry.target) if entry.target else None}
    build = layout.builds.get(key, {})
    if "hip_libdir" not in build and (libdir := libdir_of(entry.metadata)):  # older images
        build = {**build, "hip_libdir": libdir}
    if entry.kind == EntryKind.MODULE:
        why = module_skip([f.name for f in entry.files], host, run.force)
    else:
        why = why_skip(entry.target, entry.triton_version, run.targets, host, build, run.force)
    if why is not None:
        report.skipped.append({**item, "reason": why})
        return []
    copies = [staged]
    for named, rel in places[1:]:  # the same kernel for another root (a vLLM rank): a copy
        budget.spend(entry.size, f"entry {key}")
        copies.append(run.staging.dir_for(named, rel) / key)
        shutil.copytree(staged, copies[-1])
    ready = []
    size = sum(f.size for f in known.files)  # as the layer held it (what progress counted)
    for root, here in zip(roots, copies, strict=True):
        final = root / key
        if here != staged:
            judged = judge_at(final, known, here)
        reason = "already in the cache (--overwrite replaces it)" if (
            not run.overwrite and run.occupied(root, key)
        ) else judged.why_not  # fmt: skip
        if reason is not None:
            report.skipped.append({**item, "dest": str(root), "reason": reason})
            continue
        _write_group(judged, here, groups)
        judged.entry.metadata = None  # the index keeps its text, not each parsed copy
        ready.append(Ready(item, here, final, size, judged.entry))
    return ready
