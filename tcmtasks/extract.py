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
   its headers parsed in place (oci/tarread.py); each entry's JSON files are held in memory
   as they pass, so the entry is judged without reading it back, and its group is written
   once, with its final paths.
3. Triton entries: keep one only for a wanted target and the host's Triton version, check it is
   complete (metadata, binary, group), rewrite its group to the final location (Triton stores
   absolute paths: docs/cache-formats.md, "Groups and the hit rule"), and rename it into the
   cache in one step. Parts: keep one only when its producer's torch, Python and GPU match the
   host's; fix the paths its kind knows how to fix, and install it unit by unit (a whole FX-graph
   or AOTAutograd entry, else a file), each in one rename. Existing entries and units are left
   alone unless ``overwrite``.

The index records the installed entries as judged at their place (``Index.record``), with
empty fingerprints: the next refresh reads them from disk.

A process killed while streaming leaves every destination exactly as it was (things only ever
arrive by rename); the staging dirs it leaves are removed by the next extraction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import platform
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import parts as cache_parts
from .atomic import Flush, exchange, sync_filesystem
from .cache.entries import (
    Entry,
    EntryKind,
    FileInfo,
    Known,
    binary_suffixes,
    file_kind,
    scan_entry,
)
from .cache.groups import (
    group_filename,
    group_text,
    kernel_name_of_group,
    read_capped,
    read_group,
)
from .cache.remove import trash_dir
from .errors import (
    DiskFull,
    HostileImage,
    ImageError,
    IncompatibleImage,
    UsageError,
    os_error,
)
from .gpuchoice import GpuChoice, choose_gpus, owners, served_gpus
from .layerstream import (
    CACHE_PREFIX,
    MAX_TOTAL,
    SAFE_FILE,
    Layout,
    build_of,
    rows_of,
    stream_into,
)
from .oci.image import LABEL_PARTS, LABEL_PRODUCER, LABEL_SIZE, LABEL_SUMMARY, Dest
from .oci.inspect import json_label, read_labels, read_layer_manifest
from .producer import Producer, hip_libdir, host_ptxas, libdir_of, mismatches
from .restoreplan import TRITON, Destinations, PartPlan, RestoreReport
from .safedirs import check_dirs, make_dirs
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


def _check_group_names(key: str, known: Known, staged: Path) -> None:
    """A group in an image names files of its entry, nothing else: one that names a path out
    of it (``../x``) makes the whole image hostile."""
    for name in [f.name for f in known.files if kernel_name_of_group(f.name) is not None]:
        try:
            children = known.groups[name] = read_group(staged / name, data=known.data.get(name))
        except (OSError, ValueError):
            continue  # judged per entry later: incomplete
        bad = [c for c in children if not SAFE_FILE.fullmatch(c)]
        if bad:
            raise HostileImage(
                f"the group of {key} names {bad[0]!r}, a path out of its entry: "
                "nothing was installed"
            )


@dataclass
class _Judged:
    """An entry judged where it will be installed, with its group rewritten for that place
    (not yet written), or why it cannot hit there."""

    entry: Entry
    group: str  # its file name ("" when it has none)
    text: bytes | None  # the group's bytes with the final paths
    held: bool  # the image's group was held in memory, never written to the staging dir
    why_not: str | None


def _judge_at(final_dir: Path, known: Known, staged: Path) -> _Judged:
    """Judge a staged entry as it will be at ``final_dir``, from what the stream recorded of
    it (one reading of its JSON files, none from disk unless HOLD_BUDGET was spent)."""
    held_json = known.data
    if any(f.name.endswith(".json") and f.name not in held_json for f in known.files):
        known = Known(known.files, {**held_json, **_read_json(staged, known)}, known.parsed,
                      known.groups)  # fmt: skip
    groups = [n for f in known.files if (n := kernel_name_of_group(f.name))]
    files = {f.name for f in known.files}
    name = next((n for n in groups if f"{n}.json" in files), groups[0] if groups else None)
    grp = group_filename(name) if name else ""
    held = grp in held_json
    children: dict[str, str] | None = None
    problem = "no group"
    if grp:
        try:
            children = known.groups.get(grp) or read_group(staged / grp, data=known.data.get(grp))
        except (OSError, ValueError) as exc:
            problem = str(exc)
    there, text, present = known, None, set()
    if children is not None:
        present = {c for c in children if SAFE_FILE.fullmatch(c) and c in files and c != grp}
        final = {c: f"{final_dir}/{c}" for c in sorted(present)}
        text = group_text(final).encode()
        there = Known([f for f in known.files if f.name != grp], {**known.data, grp: text},
                      known.parsed, {grp: final})  # fmt: skip
        there.files.append(FileInfo(grp, file_kind(grp), len(text), time.time()))
    entry = scan_entry(final_dir.parent, final_dir.name, known=there)
    why: str | None = None
    if entry.kind == EntryKind.MODULE:  # a driver helper: one .so, no group
        return _Judged(entry, "", None, False, None)
    if entry.kind != EntryKind.KERNEL or not entry.name:
        why = f"not a kernel entry ({entry.kind})"
    elif entry.metadata is None:
        why = "incomplete: no readable metadata"
    elif children is None:
        why = f"incomplete: no usable group ({problem})"
    elif f"{entry.name}.json" not in present:
        why = "incomplete: the group does not list the metadata"
    elif not any(c.endswith(binary_suffixes(entry.target)) for c in present):
        why = "incomplete: no kernel binary"
    return _Judged(entry, grp, text, held, why)


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
            except OSError:
                names = self.listed[root] = frozenset()
        return key in names and _occupied(root / key)

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


def _read_json(staged: Path, known: Known) -> dict[str, bytes]:
    """The JSON files the stream wrote rather than held (HOLD_BUDGET spent), read back."""
    out = {}
    for f in known.files:
        if f.name.endswith(".json") and f.name not in known.data:
            with contextlib.suppress(OSError):  # unreadable: judged as missing
                out[f.name] = read_capped(staged / f.name)
    return out


def _write_group(judged: _Judged, here: Path, groups: Writer) -> None:
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
) -> RestoreReport:
    """Preflight, then (unless ``dry_run``) stream, select, relocate and install.

    ``cache_dir`` receives plain Triton entries; ``dests`` says where Inductor's and vLLM's
    parts (and their Triton entries) go, by default where this process's environment says a
    workload looks; ``same_paths`` restores parts to the producer's own paths; ``host`` is the
    workload's runtime (its Triton, Python ABI, torch, GPUs): entries and parts built for
    another are skipped with their reason, unless ``force``; ``gpus``: whose units of an image
    warmed for several GPUs to install (None: every GPU's); ``lock_timeout``: how long to
    wait for another tcm changing a destination (pods on one node start together)."""
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
        root = _producer_root(source_dir, mount) if same_paths else dests.kind_root(kind)
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
            run = _Run(layout, staging, dests, targets, host, report, overwrite, force, max_total)
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


def _producer_root(source: str, mount: str) -> str:
    """The producer's cache root for a part: its dir minus where it sat inside the root."""
    if not source or not os.path.isabs(source):
        return ""
    if mount:
        tail = "/" + mount.strip("/")
        return source[: -len(tail)] if source.endswith(tail) else ""
    return source


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
        _check_group_names(key, known[key], staged_keys[key])
    # The layer's files start on their way to the disk while the entries are judged (the
    # kernel's part of the sync runs beside this thread's Python); the sync below, which
    # publishing waits for, then has only the group files left to write.
    early = Flush(list(staging.dirs.values()))
    budget = _Budget(run.max_total, written)
    ready: list[_Ready] = []
    run.listed.clear()  # listed again, now under the roots' locks
    with open_writer() as groups:  # written beside the judging, by tar where there is one
        for key in sorted(staged_keys):
            ready += _prepare_triton(run, key, staged_keys[key], known.pop(key), budget, groups)
    # Every part is prepared (paths fixed, every destination dir made and checked) before
    # anything is installed: an image's selected parts arrive all, or none of them.
    units: list[_Unit] = []
    for plan in layout.parts.values():
        if not plan.skipped:
            staged = staging.dir_for(dests.kind_root(plan.kind)) / plan.prefix.rstrip("/")
            units += _prepare_part(plan, staged, run.overwrite)
    # Everything staged is made durable at once, before the renames that publish it: an entry
    # Triton can see never has a file still in flight (one syncfs, not an fsync per entry).
    early.wait()
    for d in staging.dirs.values():
        sync_filesystem(d)
    for r in ready:
        failed = _install(r.staged, r.final, run.overwrite)
        if failed is not None:
            report.failed.append({**r.item, "dest": str(r.final.parent), "reason": failed})
            continue
        report.kept.append({**r.item, "dest": str(r.final.parent)})
        if report.arrived_complete:
            report.arrived.append(r.entry)
        report.bytes += r.size
    for u in units:
        failed = _install(u.staged, u.final, run.overwrite, trash=u.trash)
        if failed is not None:
            u.plan.failed.append(f"{u.name}: {failed}")
            continue
        u.plan.installed += 1
        u.plan.bytes += u.size
        report.bytes += u.size


@dataclass
class _Budget:
    """The bytes a restore may still write: an entry copied for several roots (a vLLM rank
    each) counts once per copy, so ``dests`` cannot multiply a small layer past the caps."""

    limit: int
    spent: int

    def spend(self, size: int, what: str) -> None:
        self.spent += size
        if self.spent > self.limit:
            raise HostileImage(
                f"the layer unpacks to more than {self.limit} bytes with {what} copied for "
                "each place the manifest names (what the image declares, or --max-size): "
                "nothing was installed"
            )


@dataclass
class _Ready:
    """A staged entry, finished for its place, waiting for the sync and its rename."""

    item: dict[str, Any]
    staged: Path
    final: Path
    size: int
    entry: Entry  # as judged at ``final``


def _prepare_triton(
    run: _Run, key: str, staged: Path, known: Known, budget: _Budget, groups: Writer
) -> list[_Ready]:
    """Judge a staged entry for this node and finish a copy for each root it goes to (its
    group, with the paths of its place, handed to ``groups``)."""
    layout, dests, host, report = run.layout, run.dests, run.host, run.report
    places = list(dict.fromkeys(dests.split(d) for d in layout.dests.get(key, [TRITON])))
    roots = [named / rel if rel else named for named, rel in places]
    judged = _judge_at(roots[0] / key, known, staged)
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
            judged = _judge_at(final, known, here)
        reason = "already in the cache (--overwrite replaces it)" if (
            not run.overwrite and run.occupied(root, key)
        ) else judged.why_not  # fmt: skip
        if reason is not None:
            report.skipped.append({**item, "dest": str(root), "reason": reason})
            continue
        _write_group(judged, here, groups)
        judged.entry.metadata = None  # the index keeps its text, not each parsed copy
        ready.append(_Ready(item, here, final, size, judged.entry))
    return ready


@dataclass
class _Unit:
    """A part's unit, its paths fixed and its dir made, waiting for its rename."""

    plan: PartPlan
    name: str
    staged: Path
    final: Path
    trash: Path
    size: int


def _prepare_part(plan: PartPlan, staged: Path, overwrite: bool) -> list[_Unit]:
    """Fix each staged unit's paths and make (and check) the dir it goes to. A unit whose
    paths cannot be fixed stops the whole restore here, before anything is installed."""
    mod = cache_parts.module(plan.kind)
    units: dict[str, list[str]] = {}
    for rel in _files_under(staged):
        units.setdefault(cache_parts.unit_of(rel), []).append(rel)
    old_root, new_root = _producer_root(plan.source, plan.mount), _kind_root(plan)
    moved = os.path.normpath(old_root) != os.path.normpath(new_root)
    ready = []
    for unit, rels in sorted(units.items()):
        final = plan.dest / unit
        if _occupied(final) and not overwrite:
            plan.existing += 1
            continue
        reasons = [mod.relocate(staged / rel, rel, old_root, new_root) for rel in rels if moved]
        why = next((r for r in reasons if r is not None), None)
        if why is not None:
            raise ImageError(
                f"the {plan.kind} part's {unit} cannot be installed at {plan.dest}: {why}; "
                "nothing was installed"
            )
        check_dirs(new_root, os.path.relpath(final.parent, new_root))
        size = sum((staged / r).stat().st_size for r in rels)
        ready.append(_Unit(plan, unit, staged / unit, final, staged.parent, size))
    for u in ready:  # every level checked first: made only when none is a link
        make_dirs(new_root, os.path.relpath(u.final.parent, new_root))
    return ready


def _kind_root(plan: PartPlan) -> Path:
    """The node's cache root of a part's kind (its dest minus the mount)."""
    dest = plan.dest
    for _ in plan.mount.strip("/").split("/") if plan.mount else []:
        dest = dest.parent
    return dest


def _files_under(root: Path) -> Iterator[str]:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            yield os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")


#: Triton's C driver helpers (docs/cache-formats.md, "Driver helpers")
MODULE_NAMES = ("cuda_utils", "hip_utils", "__triton_launcher")


def is_module_row(row: dict[str, Any]) -> bool:
    return row.get("name") in MODULE_NAMES


def module_skip(files: list[str], host: Producer, force: bool = False) -> str | None:
    """Why a driver helper will not load for the workload: its file is ``<name><EXT_SUFFIX>``,
    and the workload's interpreter loads only its own ABI's and this machine's (its key, from
    the C source and the platform, says nothing of the Python)."""
    so = next((f for f in files if f.endswith(".so")), None)
    if force or so is None or host.python is None:
        return None
    abi = f"cpython-{host.python[2:]}-"
    if abi not in so:
        return f"a C helper built for another Python ({so}); the workload runs {host.python}"
    machine = platform.machine()
    if machine and machine not in so:
        return f"a C helper built for another machine ({so}); this node is {machine}"
    return None


def why_skip(
    target: Target | None,
    version: str | None,
    targets: list[Target] | None,
    host: Producer,
    build: dict[str, str] | None = None,
    force: bool = False,
) -> str | None:
    """Why an entry cannot hit for the workload's runtime ``host``: another target; another
    Triton version, Python ABI, Triton build or ptxas than the one its key was computed with
    (docs/cache-formats.md, "The key"). ``force`` keeps everything of a wanted target."""
    if targets is not None and target not in targets:
        return f"target {target or 'unknown'} is not one of {', '.join(map(str, targets))}"
    if force:
        return None
    build = build or {}
    if host.triton_version and version and version != host.triton_version:
        return f"built by Triton {version}; the workload runs {host.triton_version} (a miss)"
    py, key, ptxas = build.get("python"), build.get("triton_key"), build.get("ptxas")
    if host.python and py and py != host.python:
        return f"built by Triton {version or '?'} {py}; the workload runs {host.python} (a miss)"
    if host.triton_key and key and key != host.triton_key:
        return (
            f"built by another Triton build (triton_key {key}); the workload's is "
            f"{host.triton_key} (a miss)"
        )
    usable = host_ptxas(host)
    if target and target.backend == "cuda" and usable and ptxas and ptxas not in usable:
        return f"compiled with ptxas {ptxas}; the workload uses {' or '.join(usable)} (a miss)"
    built_at, here = build.get("hip_libdir"), hip_libdir(host)
    if (
        target
        and target.backend == "hip"
        and host.hip_paths_in_key is not False  # the workload's Triton says (None: unknown)
        and built_at
        and here
        and built_at != here
    ):
        return (
            f"compiled with Triton's AMD libraries at {built_at}, the workload's are at {here}: "
            "HIP keys hold that path (a miss; warm where Triton sits at the workload's path)"
        )
    return None


def _install(staged: Path, final: Path, overwrite: bool, trash: Path | None = None) -> str | None:
    """One rename puts the entry in place; why it could not, or None. An entry it replaces is
    swapped out in the same step (``exchange``), so a crash leaves the old or the new entry,
    never neither; where the file system cannot swap, the old one goes aside into the trash
    (``<root>/.tcm-trash``, or the staging dir for parts' units) and comes back if the new one
    cannot follow it."""
    if _occupied(final):
        if not overwrite:
            return "already there"
        if exchange(staged, final):
            _remove(staged)  # now the old one
            return None
        trash = trash if trash is not None else trash_dir(final.parent, create=True)
        assert trash is not None
        old = trash / f"{final.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        os.rename(final, old)
        try:
            os.rename(staged, final)
        except OSError as exc:
            os.rename(old, final)  # put the old one back
            return f"not installed ({exc.strerror or exc}); the entry there was kept"
        _remove(old)
        return None
    try:
        # rename() replaces an empty dir (Triton leaves one per missed lookup) in one step
        os.rename(staged, final)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return "another process installed it meanwhile; that one was kept"
        err = os_error(exc, "install", final)
        if isinstance(err, DiskFull):
            raise err from None
        return f"not installed: {err}"
    return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _occupied(path: Path) -> bool:
    try:
        return any(path.iterdir())
    except NotADirectoryError:
        return True
    except FileNotFoundError:
        return False
    except OSError:
        return path.exists()
