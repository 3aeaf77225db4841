"""``tcm``: the command line, thin over the library (typer for arguments, rich for output)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__, track
from .cache.entries import Entry, EntryKind, iter_dirs, scan_root
from .cache.health import diagnose, repair, rescan
from .cache.lock import locked
from .cache.remove import purge_trash
from .cache.roots import Root, discover
from .errors import CacheError, TcmError, UsageError
from .index import Index, IndexStats
from .prune import Plan, apply, plan_dedup, plan_full, plan_gc, plan_ir
from .selection import SORT_KEYS, Criteria, parse_age, parse_size, select

app = typer.Typer(
    name="tcm",
    help="Manage Triton kernel caches: index, search, check, prune and bound them; ship them as "
    "OCI images (package, push, inspect); restore them on a node (gpu, pull, extract); track "
    "whether a workload hit them (track).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Piped output is read by people too (| less, | grep): do not squeeze tables into 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)

_state: dict[str, Any] = {"db": None}

CacheDirs = Annotated[
    list[Path] | None,
    typer.Option(
        "--cache-dir",
        "-c",
        help="Cache root (repeatable). Inductor and vLLM cache "
        "dirs are expanded to the Triton roots inside them. Default: TRITON_CACHE_DIR, "
        "TRITON_HOME, ~/.triton/cache, Inductor's and vLLM's caches.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _version(value: bool) -> None:
    if value:
        out.print(f"tcm {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    db: Annotated[
        Path | None,
        typer.Option(
            "--db", envvar="TCM_DB", help="Index database [default: ~/.local/share/tcm/index.db]"
        ),
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv for debug).")
    ] = 0,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    _state["db"] = db
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err, show_path=False)],
    )


def _index() -> Index:
    return Index(_state["db"])


# -- formatting -------------------------------------------------------------------------------


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def human_age(mtime: float, now: float) -> str:
    s = max(0.0, now - mtime)
    for unit, length in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if s >= length:
            return f"{s / length:.0f}{unit} ago"
    return f"{s:.0f}s ago"


def _status(e: Entry) -> str:
    worst = (
        "error"
        if any(p.severity == "error" for p in e.problems)
        else ("warning" if e.problems else "")
    )
    color = {"hit": "green", "foreign-hit": "yellow", "miss": "red", "broken": "red"}.get(
        e.lookup, "white"
    )
    text = f"[{color}]{e.lookup}[/]" if e.lookup else e.kind
    if worst:
        text += (
            f" [{'red' if worst == 'error' else 'yellow'}]({len(e.problems)} problem"
            f"{'s' if len(e.problems) > 1 else ''})[/]"
        )
    return text


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextlib.contextmanager
def _progress(label: str, *, unit_bytes: bool = False, min_total: int = 0):
    """Yield an ``update(done, total)`` drawing a rich bar on stderr (None when stderr is not
    a terminal); the bar starts on the first update with ``total >= min_total``."""
    if not err.is_terminal:
        yield None
        return
    count = TextColumn("{task.completed:,.0f} B") if unit_bytes else MofNCompleteColumn()
    progress = Progress(
        TextColumn(label), BarColumn(), count, TimeElapsedColumn(), console=err, transient=True
    )
    task = progress.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        if total >= min_total:
            if not progress.live.is_started:
                progress.start()
            progress.update(task, completed=done, total=total or None)

    try:
        yield update
    finally:
        if progress.live.is_started:
            progress.stop()


def _refresh(index: Index, roots: list[Root], *, rescan: bool = False) -> IndexStats:
    with _progress("indexing", min_total=512) as update:
        return index.update(roots, rescan=rescan, progress=update)


def _roots_for(index: Index, cache_dirs: list[Path] | None) -> list[Root]:
    """Roots a command looks at: the given dirs; else every root already in the index (those
    that vanished are dropped from it) and every default location that exists."""
    if cache_dirs:
        roots = discover(cache_dirs)
        missing = [r for r in roots if not r.path.is_dir()]
        if missing:
            raise CacheError(f"cache dir {missing[0].path} does not exist")
        return roots
    found: dict[Path, Root] = {}
    for r in index.roots():
        if r.path.is_dir():
            found[r.path] = r
        else:
            n = index.forget(r.path)
            logging.getLogger("tcm").warning(
                "cache dir %s is gone; dropped its %d entries from the index", r.path, n
            )
    for r in discover(None):
        found.setdefault(r.path, r)
    if not found:
        raise CacheError(
            "no Triton cache found (looked at TRITON_CACHE_DIR, TRITON_HOME, "
            "~/.triton/cache, Inductor's and vLLM's caches); pass --cache-dir DIR"
        )
    return list(found.values())


# -- commands ---------------------------------------------------------------------------------


@app.command("index")
def index_cmd(
    cache_dir: CacheDirs = None,
    rescan: Annotated[
        bool,
        typer.Option(
            "--rescan", help="Re-read every entry, not only those whose directory changed."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index cache roots into the SQLite database (incremental: unchanged entries are skipped).

    Without --cache-dir: the default locations and every root indexed before.
    """
    with _index() as index:
        roots = _roots_for(index, cache_dir)
        stats = _refresh(index, roots, rescan=rescan)
        spooled = track.ingest(track.track_dir())  # lookups of processes tracked by env var
        if spooled.kernels:
            index.record_usage(spooled)
        total = index.count()
    if as_json:
        _print_json(
            {
                **stats.__dict__,
                "db": str(index.path),
                "entries": total,
                "roots": [
                    {"path": str(r.path), "origin": r.origin, "group": r.group} for r in roots
                ],
            }
        )
        return
    for r in roots:
        out.print(f"  {r.path}  [dim]({r.origin}{', ' + r.group if r.group else ''})[/]")
    out.print(
        f"indexed {stats.roots} root{'s' if stats.roots != 1 else ''}: {stats.seen} entries "
        f"({stats.added} new, {stats.updated} changed, {stats.removed} gone, "
        f"{stats.unchanged} unchanged) in {stats.seconds:.2f} s -> {index.path}"
    )


NameOpt = Annotated[
    list[str] | None,
    typer.Option("--name", "-n", help="Kernel name, exact or glob (repeatable)."),
]
BackendOpt = Annotated[
    list[str] | None, typer.Option("--backend", "-b", help="cuda, hip or rocm (an alias of hip).")
]
ArchOpt = Annotated[list[str] | None, typer.Option("--arch", "-a", help="e.g. 90, sm_90, gfx942.")]
VersionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--triton-version",
        "-t",
        help="3.6 (any 3.6.x), 3.6.0, a glob, or 'unknown' (written before 3.3).",
    ),
]
OlderOpt = Annotated[
    str | None,
    typer.Option("--older-than", help="Newest file older than AGE (units s m h d w, e.g. 7d)."),
]
YoungerOpt = Annotated[
    str | None, typer.Option("--younger-than", help="Newest file younger than AGE.")
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show what would be removed; change nothing.")
]


def _criteria(name, backend, arch, triton_version, older_than, younger_than, kinds) -> Criteria:
    return Criteria(
        names=name or [],
        backends=backend or [],
        archs=arch or [],
        triton_versions=triton_version or [],
        older_than=parse_age(older_than) if older_than else None,
        younger_than=parse_age(younger_than) if younger_than else None,
        kinds=kinds,
    )


@app.command("list")
def list_cmd(
    cache_dir: CacheDirs = None,
    name: NameOpt = None,
    backend: BackendOpt = None,
    arch: ArchOpt = None,
    triton_version: VersionOpt = None,
    older_than: OlderOpt = None,
    younger_than: YoungerOpt = None,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            "--kind",
            help="Entry kinds: kernel (default), module, autotune, in-flight, empty, unknown.",
        ),
    ] = None,
    all_kinds: Annotated[bool, typer.Option("--all", help="Every kind of entry.")] = False,
    min_hits: Annotated[
        int | None, typer.Option(help="At least N tracked hits (see tcm track).")
    ] = None,
    max_hits: Annotated[
        int | None, typer.Option(help="At most N tracked hits (0: never hit while tracked).")
    ] = None,
    sort: Annotated[
        str, typer.Option(help=f"One of {', '.join(SORT_KEYS)}; prefix - to reverse.")
    ] = "name",
    no_refresh: Annotated[
        bool, typer.Option("--no-refresh", help="Use the index as it is; do not look at the disk.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List cached kernels, filtered and sorted.

    Refreshes the index first; that is cheap.
    """
    kinds = [] if all_kinds else (kind or [EntryKind.KERNEL])
    criteria = _criteria(name, backend, arch, triton_version, older_than, younger_than, kinds)
    criteria.min_hits, criteria.max_hits = min_hits, max_hits
    with _index() as index:
        roots = _roots_for(index, cache_dir)
        if not no_refresh:
            _refresh(index, roots)
        entries = index.entries([r.path for r in roots])
    now = time.time()
    chosen = select(entries, criteria, sort=sort, now=now)
    if as_json:
        _print_json([e.to_dict(files=False) for e in chosen])
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col, just in (
        ("KEY", "left"),
        ("NAME", "left"),
        ("TARGET", "left"),
        ("TRITON", "left"),
        ("W/S", "right"),
        ("SIZE", "right"),
        ("AGE", "right"),
        ("HITS", "right"),
        ("STATUS", "left"),
    ):
        table.add_column(col, justify=just, no_wrap=col != "NAME")  # type: ignore[arg-type]
    multi_root = len({e.root for e in chosen}) > 1
    if multi_root:
        table.add_column("ROOT", no_wrap=True)
    for e in chosen:
        ws = f"{e.num_warps}/{e.num_stages}" if e.num_warps is not None else ""
        key = e.key[:12] + ("…" if len(e.key) > 12 else "")
        row = [
            key,
            e.name or "-",
            str(e.target) if e.target else "-",
            e.triton_version or "-",
            ws,
            human_size(e.size),
            human_age(e.mtime, now),
            f"{e.hits}/{e.misses}" if e.last_used else "",
            _status(e),
        ]
        table.add_row(*row, *([f"[dim]{e.root}[/]"] if multi_root else []))
    out.print(table)
    total = sum(e.size for e in chosen)
    out.print(f"[dim]{len(chosen)} of {len(entries)} entries, {human_size(total)}[/]")


@app.command("show")
def show_cmd(
    key: Annotated[str, typer.Argument(help="Entry key or a unique prefix of it.")],
    cache_dir: CacheDirs = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one entry: its metadata, files and lookup verdict."""
    with _index() as index:
        roots = _roots_for(index, cache_dir)
        _refresh(index, roots)
        found = index.entries([r.path for r in roots], keys=[key], with_metadata=True)
    if not found:
        raise CacheError(
            f"no entry with key {key!r} in {', '.join(str(r) for r in roots)}; "
            "tcm list shows the keys"
        )
    if len(found) > 1:
        keys = ", ".join(f"{e.key} ({e.root})" for e in found[:5])
        raise CacheError(
            f"{key!r} matches {len(found)} entries ({keys}); give more of the key or --cache-dir"
        )
    e = found[0]
    if as_json:
        _print_json(e.to_dict(metadata=True))
        return
    now = time.time()
    out.print(f"[bold]{e.key}[/]  {e.path}")
    rows = [
        ("kind", e.kind), ("name", e.name or "-"), ("target", str(e.target or "-")),
        ("triton", e.triton_version or "unknown"), ("key format", e.key_format),
        ("warps/stages/ctas", f"{e.num_warps}/{e.num_stages}/{e.num_ctas}"),
        ("shared memory", f"{e.shared} B" if e.shared is not None else "-"),
        ("size", f"{human_size(e.size)} in {len(e.files)} files"),
        ("newest file", f"{datetime.fromtimestamp(e.mtime):%Y-%m-%d %H:%M:%S} "
                        f"({human_age(e.mtime, now)})"),
        ("lookup", _status(e)),
    ]  # fmt: skip
    for label, value in rows:
        out.print(f"  [bold]{label:<18}[/] {value}")
    files = Table(box=None, header_style="bold", title="files", title_justify="left")
    files.add_column("NAME")
    files.add_column("KIND")
    files.add_column("SIZE", justify="right")
    for f in e.files:
        files.add_row(f.name, f.kind, human_size(f.size))
    out.print(files)
    for p in e.problems:
        out.print(
            f"  [{'red' if p.severity == 'error' else 'yellow'}]{p.severity}[/] "
            f"{p.code}: {p.message}"
        )
    if e.metadata is not None:
        out.print("[bold]metadata[/]")
        out.print_json(data=e.metadata)


@app.command("doctor")
def doctor_cmd(
    cache_dir: CacheDirs = None,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="Make the safe repairs: rewrite groups to "
            "the entry's current location, remove write leftovers "
            "older than an hour.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check every entry on disk for problems.

    Exits 1 when problems are found (or remain after --fix).
    """
    with _index() as index:
        roots = _roots_for(index, cache_dir)
        entries = [e for r in roots for e in scan_root(r.path)]
        sick = diagnose(entries)
        repairs = []
        if fix and sick:
            with contextlib.ExitStack() as stack:
                for r in {e.root for e in sick}:
                    stack.enter_context(locked(r))
                for e in sick:
                    repairs += repair(e)
            sick = diagnose(rescan(e) for e in sick)
        if fix:
            _refresh(index, roots)
    errors = sum(1 for e in sick if any(p.severity == "error" for p in e.problems))
    if as_json:
        _print_json(
            {
                "checked": len(entries),
                "roots": [str(r.path) for r in roots],
                "entries": [e.to_dict(files=False) for e in sick],
                "repairs": [r.__dict__ for r in repairs],
            }
        )
    else:
        for r in repairs:
            color = "yellow" if r.action == "skipped" else "green"
            out.print(f"[{color}]{r.action}[/] {r.key[:12]}  {r.detail}")
        if sick:
            table = Table(box=None, header_style="bold", pad_edge=False)
            table.add_column("KEY", no_wrap=True)
            table.add_column("NAME", no_wrap=True)
            table.add_column("SEVERITY", no_wrap=True)
            table.add_column("PROBLEM")
            for e in sick:
                for p in e.problems:
                    color = "red" if p.severity == "error" else "yellow"
                    table.add_row(
                        e.key[:12],
                        e.name or e.kind,
                        f"[{color}]{p.severity}[/]",
                        f"{p.code}: {p.message}",
                    )
            out.print(table)
        verdict = (
            "[green]healthy[/]"
            if not sick
            else (f"[red]{len(sick)} with problems[/] ({errors} with errors)")
        )
        out.print(
            f"checked {len(entries)} entries in {len(roots)} root"
            f"{'s' if len(roots) != 1 else ''}: {verdict}"
        )
    if sick:
        raise typer.Exit(1)


def _show_plan(plan: Plan, limit: int = 40) -> None:
    if plan.actions:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("KEY", "NAME", "TARGET", "SIZE", "WHY"):
            table.add_column(
                col, no_wrap=col != "WHY", justify="right" if col == "SIZE" else "left"
            )
        for a in plan.actions[:limit]:
            e = a.entry
            table.add_row(
                e.key[:12], e.name or e.kind, str(e.target or "-"), human_size(a.bytes), a.reason
            )
        out.print(table)
        if len(plan.actions) > limit:
            out.print(f"[dim]... and {len(plan.actions) - limit} more (--json lists all)[/]")
    for e, why in plan.skipped[:limit]:
        out.print(f"[yellow]skip[/] {e.key[:12]} {e.name or e.kind}: {why}")
    for note in plan.notes:
        out.print(f"[yellow]note[/] {note}")
    n = len(plan.actions)
    out.print(
        f"{plan.mode}: {human_size(plan.bytes)} from {n} entr{'y' if n == 1 else 'ies'}"
        + (f", {len(plan.skipped)} skipped" if plan.skipped else "")
    )


def _change(
    roots: list[Root],
    index: Index,
    make_plan,
    *,
    yes: bool,
    dry_run: bool,
    as_json: bool,
    needs_metadata: bool = False,
) -> None:
    """Lock the roots, plan on a fresh index, confirm, apply, re-index:

    shared by prune and gc.
    """
    if as_json and not (yes or dry_run):
        raise UsageError("--json cannot ask for confirmation: add --yes or --dry-run")
    with contextlib.ExitStack() as stack:
        for r in roots:
            stack.enter_context(locked(r.path))
            if n := purge_trash(r.path):
                logging.getLogger("tcm").info("purged %d leftovers of an interrupted removal", n)
        _refresh(index, roots)
        plan = make_plan(index.entries([r.path for r in roots], with_metadata=needs_metadata))
        if not as_json:
            _show_plan(plan)
        if dry_run or not plan.actions:
            if as_json:
                _print_json({**plan.to_dict(), "dry_run": dry_run})
            return
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError(
                    "not a terminal, so cannot ask: add --yes to go ahead, or "
                    "--dry-run to only look"
                )
            if not typer.confirm(f"Remove {human_size(plan.bytes)}?", err=True):
                raise typer.Exit(1)
        with _progress("removing", min_total=512) as update:
            result = apply(plan, progress=update)
        _refresh(index, roots)
    if as_json:
        _print_json({**plan.to_dict(), "dry_run": False, "result": result.to_dict()})
    else:
        for a, msg in result.failed:
            err.print(f"[red]failed[/] {a.entry.key[:12]}: {msg}")
        out.print(
            f"freed {human_size(result.freed)} in {len(result.done)} entries"
            + (f"; [red]{len(result.failed)} failed[/]" if result.failed else "")
        )
    if result.failed:
        raise typer.Exit(1)


@app.command("prune")
def prune_cmd(
    cache_dir: CacheDirs = None,
    name: NameOpt = None,
    backend: BackendOpt = None,
    arch: ArchOpt = None,
    triton_version: VersionOpt = None,
    older_than: OlderOpt = None,
    younger_than: YoungerOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Remove whole entries.")] = False,
    dedup: Annotated[
        bool,
        typer.Option(
            "--dedup",
            help="Remove duplicates: same kernel, target, binary and options in one root; "
            "the newest is kept.",
        ),
    ] = False,
    asm: Annotated[bool, typer.Option("--asm", help="IR mode: also drop .ptx / .amdgcn.")] = False,
    source: Annotated[bool, typer.Option("--source", help="IR mode: also drop .source.")] = False,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Prune selected entries without breaking a hit.

    By default drops IR files (.ttir .ttgir .llir), which no cached launch reads, and
    rewrites each group to match; --full removes whole entries; --dedup removes duplicates.
    Entries are chosen with the same filters as tcm list.
    """
    if full and dedup:
        raise UsageError("--full and --dedup are different modes: pick one")
    if (asm or source) and (full or dedup):
        raise UsageError("--asm and --source belong to the IR mode (no --full/--dedup)")
    criteria = _criteria(
        name, backend, arch, triton_version, older_than, younger_than, [EntryKind.KERNEL]
    )

    def make_plan(entries: list[Entry]) -> Plan:
        chosen = select(entries, criteria)
        if full:
            return plan_full(chosen)
        if dedup:
            return plan_dedup(chosen)
        return plan_ir(chosen, asm=asm, source=source)

    with _index() as index:
        _change(
            _roots_for(index, cache_dir),
            index,
            make_plan,
            yes=yes,
            dry_run=dry_run,
            as_json=as_json,
            needs_metadata=dedup,  # compile options come from metadata; other modes skip it
        )


@app.command("gc")
def gc_cmd(
    cache_dir: CacheDirs = None,
    max_size: Annotated[
        str | None, typer.Option(help="Keep the cache under SIZE (e.g. 2G, 500M).")
    ] = None,
    max_age: Annotated[
        str | None, typer.Option(help="Remove entries not used for AGE (e.g. 30d).")
    ] = None,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Bring caches under a size and/or age budget.

    Least recently used entries go first (tracked use when tcm track recorded it, else the
    newest file). Launcher modules and writes in progress are never removed.
    """
    if max_size is None and max_age is None:
        raise UsageError("give --max-size and/or --max-age")
    size = parse_size(max_size) if max_size else None
    age = parse_age(max_age) if max_age else None

    with _index() as index:
        tracked = index.last_used()  # runtime use from tcm track, when there is any

        def make_plan(entries: list[Entry]) -> Plan:
            return plan_gc(entries, max_size=size, max_age=age, last_used=tracked)

        _change(
            _roots_for(index, cache_dir),
            index,
            make_plan,
            yes=yes,
            dry_run=dry_run,
            as_json=as_json,
        )


@app.command("track", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def track_cmd(
    command: Annotated[
        list[str], typer.Argument(help="The command to run, after --, e.g. -- python train.py")
    ],
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", "-c", help="Run the command with TRITON_CACHE_DIR=DIR."),
    ] = None,
    require_hits: Annotated[
        bool,
        typer.Option(
            "--require-hits",
            help="Exit 1 when the command compiled any kernel: the cache did not cover it.",
        ),
    ] = False,
    no_index: Annotated[
        bool, typer.Option("--no-index", help="Do not add the hits and misses to the index.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a command and report Triton's cache hits and misses.

    Prints hits, misses and compile time per kernel on stderr (--json prints on stdout after
    the command's own output) and adds them to the index.
    """
    if os.environ.get("TRITON_CACHE_MANAGER") not in (None, track.MANAGER):
        raise UsageError(
            f"TRITON_CACHE_MANAGER is set to {os.environ['TRITON_CACHE_MANAGER']}; tcm track "
            "needs its own cache manager: unset it for this run"
        )
    with tempfile.TemporaryDirectory(prefix="tcm-track-") as events:
        env = {**os.environ, **track.tracking_env(Path(events), cache_dir)}
        try:
            proc = subprocess.Popen(command, env=env)
        except FileNotFoundError:
            raise UsageError(f"command not found: {command[0]}") from None
        except PermissionError:
            raise UsageError(f"command not executable: {command[0]}") from None
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # the child got the same SIGINT; let it finish, then report
            rc = proc.wait()
        stats = track.summarize(track.read_events(Path(events)))
    recorded = 0
    if not no_index and stats.kernels:
        with _index() as index:
            recorded = index.record_usage(stats)
    compiled = rc == 0 and require_hits and stats.misses > 0
    if as_json:
        _print_json({**stats.to_dict(), "returncode": rc, "index_updated": recorded})
    else:
        _print_track(stats)
        if compiled:
            err.print(
                f"[red]--require-hits: {stats.misses} kernel(s) were compiled[/]: the cache "
                f"({', '.join(stats.cache_dirs) or 'none'}) did not cover this workload"
            )
    if rc != 0:
        raise typer.Exit(rc if 0 < rc < 256 else 1)
    if compiled:
        raise typer.Exit(1)


def _print_track(stats: track.TrackStats) -> None:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("NAME", "KEY", "HITS", "MISSES", "COMPILE s"):
        table.add_column(col, justify="left" if col in ("NAME", "KEY") else "right")
    for k in stats.kernels:
        table.add_row(
            k.name,
            k.key[:12],
            str(k.hits),
            str(k.misses),
            f"{k.compile_seconds:.2f}" if k.compile_seconds else "",
        )
    if stats.kernels:
        err.print(table)
    color = "green" if stats.misses == 0 else "yellow"
    err.print(
        f"[{color}]{stats.lookups} lookups: {stats.hits} hits, {stats.misses} misses[/]"
        + (f", {stats.compile_seconds:.2f} s compiling" if stats.compile_seconds else "")
        + (f" ({', '.join(stats.cache_dirs)})" if stats.cache_dirs else "")
    )


InsecureOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--insecure-host",
        help="HOST[:PORT] reached without TLS verification, or over plain HTTP (repeatable); "
        "every other registry is verified.",
    ),
]
CaCertOpt = Annotated[
    Path | None, typer.Option("--ca-cert", help="PEM file of a CA to trust for registries.")
]


def _registry_opts(insecure_host, ca_cert, chunk_size=None):
    from .oci.transfer import RegistryOptions

    if ca_cert is not None and not ca_cert.is_file():
        raise UsageError(f"--ca-cert {ca_cert} does not exist")
    return RegistryOptions(
        insecure_hosts=insecure_host or [], ca_cert=ca_cert, chunk_size=chunk_size
    )


@app.command("package")
def package_cmd(
    cache_dir: Annotated[Path, typer.Argument(help="The cache root to package.")],
    ref: Annotated[
        str,
        typer.Argument(
            help="Where to write the image: oci:DIR[:TAG] (default "
            "form), oci-archive:FILE[:TAG] or docker://HOST/REPO:TAG."
        ),
    ],
    name: NameOpt = None,
    backend: BackendOpt = None,
    arch: ArchOpt = None,
    triton_version: VersionOpt = None,
    older_than: OlderOpt = None,
    younger_than: YoungerOpt = None,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", help="Only entries for this target, e.g. cuda:90 (repeatable)."),
    ] = None,
    compression: Annotated[str, typer.Option(help="gzip, zstd or none.")] = "gzip",
    level: Annotated[int | None, typer.Option(help="Compression level.")] = None,
    mount_path: Annotated[
        str | None,
        typer.Option(
            help="Write groups for an image mounted read-only at PATH (hits without extraction)."
        ),
    ] = None,
    builder: Annotated[
        str,
        typer.Option(
            help="tcm (daemonless, reproducible), or podman / docker through their "
            "API (the builder extra), with the same labels and layout."
        ),
    ] = "tcm",
    insecure_host: InsecureOpt = None,
    ca_cert: CaCertOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a reproducible OCI image of a cache (no daemon).

    One layer with io.triton.cache/<KEY>/... and io.triton.manifest/manifest.json and the
    MCV labels, from the cache's healthy kernel entries. SOURCE_DATE_EPOCH sets the
    timestamps; the same entries give the same digest.
    """
    from .oci.image import package
    from .oci.layout import OciLayout
    from .oci.refs import parse
    from .oci.transfer import copy_image, open_dest
    from .targets import Target

    dest_ref = parse(ref)
    targets = [Target.parse(t) for t in target or []]
    criteria = _criteria(
        name, backend, arch, triton_version, older_than, younger_than, [EntryKind.KERNEL]
    )
    if not cache_dir.is_dir():
        raise CacheError(f"cache dir {cache_dir} does not exist")
    with _index() as index:
        roots = discover([cache_dir])
        _refresh(index, roots)
        entries = select(index.entries([r.path for r in roots], with_metadata=True), criteria)
    if targets:
        entries = [e for e in entries if e.target in targets]
    skipped = [e for e in entries if e.lookup != "hit"]
    entries = [e for e in entries if e.lookup == "hit"]
    for e in skipped:
        err.print(f"[yellow]skip[/] {e.key[:12]} {e.name}: lookup is '{e.lookup}' (tcm doctor)")
    producer_file = cache_dir / ".tcm-producer.json"
    producer = json.loads(producer_file.read_text()) if producer_file.is_file() else None
    opts = _registry_opts(insecure_host, ca_cert)
    if builder not in ("tcm", "podman", "docker"):
        raise UsageError(f"unknown builder {builder!r}; use tcm, podman or docker")
    if builder != "tcm":
        _package_with_engine(
            builder, entries, skipped, dest_ref, opts, mount_path, producer, as_json
        )
        return
    staging = None
    if dest_ref.transport == "docker":
        staging = tempfile.TemporaryDirectory(prefix="tcm-package-")
        store = OciLayout(Path(staging.name), dest_ref.tag, create=True)
    else:
        store = open_dest(dest_ref, opts)
    try:
        built = package(
            entries,
            store,
            compression=compression,
            level=level,
            mount_path=mount_path,
            producer=producer,
        )
        from .oci.image import MT_MANIFEST

        store.put_manifest(built.manifest, MT_MANIFEST)
        store.commit()
        if staging is not None:
            with _progress("pushing", unit_bytes=True) as update:
                copy_image(store, open_dest(dest_ref, opts), progress=update)
    finally:
        if staging is not None:
            staging.cleanup()
        if hasattr(store, "close"):
            store.close()
    result = {
        "reference": str(dest_ref),
        "digest": built.digest,
        "entries": len(entries),
        "skipped": len(skipped),
        "layer_size": built.layer.size,
        "cache_size_bytes": sum(e.size for e in entries),
        "labels": built.labels,
    }
    if as_json:
        _print_json(result)
    else:
        out.print(
            f"packaged {len(entries)} entries ({human_size(result['cache_size_bytes'])}, "
            f"layer {human_size(built.layer.size)}) -> {dest_ref}\n{built.digest}"
        )


def _package_with_engine(
    builder, entries, skipped, dest_ref, opts, mount_path, producer, as_json
) -> None:
    from .oci.engine import build_with_engine
    from .oci.transfer import copy_image, open_dest

    if not entries:
        raise UsageError("no kernel entries selected: nothing to package")
    archive = build_with_engine(
        builder,
        entries,
        f"localhost/tcm-build:{dest_ref.tag}",
        mount_path=mount_path,
        producer=producer,
    )
    try:
        result = copy_image(archive, open_dest(dest_ref, opts))
    finally:
        archive.file.unlink(missing_ok=True)
    info = {
        "reference": str(dest_ref),
        "digest": result.digest,
        "entries": len(entries),
        "skipped": len(skipped),
        "builder": builder,
        "cache_size_bytes": sum(e.size for e in entries),
    }
    if as_json:
        _print_json(info)
    else:
        out.print(f"packaged {len(entries)} entries with {builder} -> {dest_ref}\n{result.digest}")


@app.command("push")
def push_cmd(
    src: Annotated[str, typer.Argument(help="Source image reference.")],
    dest: Annotated[str, typer.Argument(help="Destination image reference.")],
    insecure_host: InsecureOpt = None,
    ca_cert: CaCertOpt = None,
    chunk_size: Annotated[
        str | None,
        typer.Option(help="Upload blobs larger than SIZE in chunks of SIZE (default 16M)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy an image between any two references.

    A registry, an OCI layout or an archive. Blobs the destination already has are skipped;
    every blob is verified as it streams.
    """
    from .oci.refs import parse
    from .oci.transfer import copy_image, discard_new_layout, open_dest, open_source

    opts = _registry_opts(insecure_host, ca_cert, parse_size(chunk_size) if chunk_size else None)
    dest_ref = parse(dest)
    existed = dest_ref.path is not None and dest_ref.path.exists()
    source = open_source(src, opts)
    t0 = time.perf_counter()
    try:
        with _progress("copying", unit_bytes=True) as update:
            result = copy_image(source, open_dest(dest_ref, opts), progress=update)
    except BaseException:
        if dest_ref.transport == "oci" and dest_ref.path is not None:
            discard_new_layout(dest_ref.path, existed)
        raise
    secs = time.perf_counter() - t0
    if as_json:
        _print_json({**result.__dict__, "seconds": secs, "source": src, "destination": dest})
    else:
        out.print(
            f"{src} -> {dest}: {result.copied} blobs copied ({human_size(result.bytes)}), "
            f"{result.skipped} already there, {secs:.2f} s\n{result.digest}"
        )


@app.command("inspect")
def inspect_cmd(
    ref: Annotated[str, typer.Argument(help="Image reference.")],
    insecure_host: InsecureOpt = None,
    ca_cert: CaCertOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show an image's labels, targets, producer and entries.

    Nothing is extracted: only the manifest, the config and the head of the layer are read.
    """
    from .oci.inspect import inspect
    from .oci.transfer import open_source

    info = inspect(open_source(ref, _registry_opts(insecure_host, ca_cert)))
    if as_json:
        _print_json(info)
        return
    out.print(f"[bold]{info['reference']}[/]")
    targets = ", ".join(f"{t['backend']}:{t['arch']}" for t in info["targets"]) or "-"
    out.print(
        f"  entries {info['entry_count']}, cache size "
        f"{human_size(info['cache_size_bytes'] or 0)}, targets {targets}"
    )
    if info["producer"]:
        out.print(f"  producer {json.dumps(info['producer'])}")
    for k, v in sorted(info["labels"].items()):
        out.print(f"  [dim]{k}[/] = {v}")
    rows = info.get("entries") or []
    if rows:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("KEY", "NAME", "TARGET", "TRITON", "W/S", "SIZE"):
            table.add_column(col)
        for r in rows:
            table.add_row(
                str(r.get("key") or r.get("hash", ""))[:12],
                str(r.get("name", "-")),
                f"{r.get('backend')}:{r.get('arch')}",
                str(r.get("triton_version")),
                f"{r.get('num_warps')}/{r.get('num_stages')}",
                human_size(r["size"]) if isinstance(r.get("size"), int) else "-",
            )
        out.print(table)


def _default_cache_dir() -> Path:
    env = os.environ.get("TRITON_CACHE_DIR")
    if env:
        return Path(env)
    home = os.environ.get("TRITON_HOME") or os.path.expanduser("~")
    return Path(home) / ".triton" / "cache"


@app.command("gpu")
def gpu_cmd(as_json: JsonOpt = False) -> None:
    """Show this host's GPU targets and Triton build.

    Targets from nvidia-ml-py, amdsmi or the KFD sysfs; the Triton version, Python ABI,
    triton_key() and ptxas that lookups on this host will use.
    """
    from .producer import detect
    from .targets import host_targets

    targets, names = host_targets()
    producer = detect()
    if as_json:
        _print_json(
            {"targets": [str(t) for t in targets], "gpus": names, "producer": producer.to_dict()}
        )
        return
    if targets:
        for t, n in zip(targets, names, strict=False):
            out.print(f"  {t}  (warp {t.warp_size})  {n}")
    else:
        out.print("  no GPU found (nvidia-ml-py / amdsmi / /sys/class/kfd); use --target")
    for k, v in producer.to_dict().items():
        out.print(f"  [dim]{k}[/] {v}")


def _restore(
    ref: str,
    cache_dir: Path | None,
    target: list[str] | None,
    all_targets: bool,
    strict: bool,
    overwrite: bool,
    dry_run: bool,
    max_size: str | None,
    insecure_host,
    ca_cert,
    as_json: bool,
) -> None:
    from .extract import extract
    from .oci.transfer import open_source
    from .producer import detect
    from .targets import Target, host_targets

    if all_targets and target:
        raise UsageError("--all and --target contradict each other: pick one")
    targets: list[Target] | None
    if all_targets:
        targets = None
    elif target:
        targets = [Target.parse(t) for t in target]
    else:
        targets, _names = host_targets()
        if not targets:
            raise UsageError(
                "no GPU found on this host: name the targets to keep with "
                "--target (e.g. --target cuda:90), or keep everything with --all"
            )
    dest = cache_dir or _default_cache_dir()
    source = open_source(ref, _registry_opts(insecure_host, ca_cert))
    with _progress("extracting", unit_bytes=True) as update:
        report = extract(
            source,
            dest,
            targets=targets,
            host=detect(),
            strict=strict,
            overwrite=overwrite,
            dry_run=dry_run,
            max_total=parse_size(max_size) if max_size else 64 << 30,
            progress=(lambda n: update(n, 0)) if update else None,
        )
    if not dry_run:
        with _index() as index:
            index.update(discover([dest]))
    if as_json:
        _print_json(report.to_dict())
        return
    for w in report.producer_warnings:
        err.print(f"[yellow]warning[/] keys may not match this host: {w}")
    for item in report.skipped:
        out.print(
            f"[yellow]skip[/] {str(item.get('key'))[:12]} {item.get('name')} "
            f"{item.get('target')}: {item['reason']}"
        )
    verb = "would keep" if dry_run else "installed"
    out.print(
        f"{report.reference}: {verb} {len(report.kept)} entries"
        + ("" if dry_run else f" ({human_size(report.bytes)}) into {report.cache_dir}")
        + f", skipped {len(report.skipped)}, {report.seconds:.2f} s"
    )


_RestoreCacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        "-c",
        help="Where to install [default: TRITON_CACHE_DIR, else ~/.triton/cache].",
    ),
]
_TargetsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--target", help="Keep entries for this target (repeatable) instead of the host's GPUs."
    ),
]
_AllOpt = Annotated[bool, typer.Option("--all", help="Keep every entry, whatever its target.")]
_StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict", help="Refuse when the image's Triton build or ptxas differs from the host's."
    ),
]
_OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace entries the cache already has.")
]
_MaxSizeOpt = Annotated[
    str | None,
    typer.Option("--max-size", help="Refuse layers that unpack to more than SIZE [default 64G]."),
]


@app.command("pull")
def pull_cmd(
    ref: Annotated[str, typer.Argument(help="Image reference (any form; see tcm push).")],
    cache_dir: _RestoreCacheDir = None,
    target: _TargetsOpt = None,
    all_targets: _AllOpt = False,
    strict: _StrictOpt = False,
    overwrite: _OverwriteOpt = False,
    dry_run: DryRunOpt = False,
    max_size: _MaxSizeOpt = None,
    insecure_host: InsecureOpt = None,
    ca_cert: CaCertOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore a cache image on this node.

    Checks the image against the host's GPUs and Triton before downloading, keeps the
    kernels that will load and hit here, extracts safely, rewrites group paths, installs
    each entry atomically, and reports what was skipped and why.
    """
    _restore(
        ref,
        cache_dir,
        target,
        all_targets,
        strict,
        overwrite,
        dry_run,
        max_size,
        insecure_host,
        ca_cert,
        as_json,
    )


@app.command("extract")
def extract_cmd(
    ref: Annotated[
        str,
        typer.Argument(help="A local image: oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE."),
    ],
    cache_dir: _RestoreCacheDir = None,
    target: _TargetsOpt = None,
    all_targets: _AllOpt = False,
    strict: _StrictOpt = False,
    overwrite: _OverwriteOpt = False,
    dry_run: DryRunOpt = False,
    max_size: _MaxSizeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """tcm pull for a local image (no registry involved)."""
    if ref.startswith("docker://"):
        raise UsageError("tcm extract reads local images; use tcm pull for docker://")
    _restore(
        ref,
        cache_dir,
        target,
        all_targets,
        strict,
        overwrite,
        dry_run,
        max_size,
        None,
        None,
        as_json,
    )


@app.command("warm", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def warm_cmd(
    command: Annotated[
        list[str] | None, typer.Argument(help="command backend: the command, after --")
    ] = None,
    backend: Annotated[
        str, typer.Option(help="triton (no GPU), command, torch (GPU) or vllm (container).")
    ] = "triton",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            "--host-cache-dir",
            help="Output dir (the cache, or the vLLM cache mounted in the container).",
        ),
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", help="triton: targets, comma-separated or repeated."),
    ] = None,
    kernels: Annotated[
        str | None, typer.Option(help="triton: kernel-set module (file or module name).")
    ] = None,
    inductor: Annotated[
        bool, typer.Option(help="command: also point TORCHINDUCTOR_CACHE_DIR at OUTPUT/inductor.")
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(
            help="torch: examples/models/<name> or a dir with config.json; "
            "vllm: the model to serve."
        ),
    ] = None,
    batch: Annotated[str, typer.Option(help="torch: batch sizes, comma-separated.")] = "1",
    seq: Annotated[str, typer.Option(help="torch: sequence lengths, comma-separated.")] = "128",
    dtype: Annotated[str, typer.Option(help="torch: dtypes (fp16, bf16, fp32).")] = "fp16",
    image: Annotated[str, typer.Option(help="vllm: container image.")] = (
        "docker.io/vllm/vllm-openai:latest"
    ),
    engine: Annotated[str, typer.Option(help="vllm: podman or docker.")] = "podman",
    hf_token_file: Annotated[
        Path | None,
        typer.Option(
            help="vllm: file holding the Hugging Face token (else HF_TOKEN); never printed."
        ),
    ] = None,
    container_cache_dir: Annotated[
        str, typer.Option(help="vllm: cache dir inside the container.")
    ] = "/root/.cache/vllm",
    rocm: Annotated[bool, typer.Option(help="vllm: pass AMD GPUs (/dev/kfd, /dev/dri).")] = False,
    no_gpu: Annotated[bool, typer.Option("--no-gpu", help="vllm: pass no GPU.")] = False,
    timeout: Annotated[
        float, typer.Option(help="vllm: seconds before the container is killed.")
    ] = 3600.0,
    tarball: Annotated[
        Path | None, typer.Option(help="vllm: also write the output as a .tar.gz.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Warm a cache for a kernel set or a model.

    Backends: triton compiles a kernel set for named GPUs without one (keys match real
    launches); command runs any command against the output; torch runs torch.compile of a
    transformers model from a config on this GPU; vllm runs vLLM in a container. Every warm
    writes a producer record (.tcm-producer.json) that tcm package puts in the image labels.
    """
    from .producer import detect, write_record
    from .targets import Target, host_targets

    if output is None:
        raise UsageError("give the output dir: -o DIR")
    t0 = time.perf_counter()
    if backend == "triton":
        from .warm.triton_backend import compile_kernelset

        if not kernels:
            raise UsageError(
                "the triton backend needs --kernels (e.g. examples/kernels/tutorials.py)"
            )
        targets = [Target.parse(x) for t in target or [] for x in t.split(",") if x]
        before = {n for n, _s, _e in iter_dirs(output)} if output.is_dir() else set()
        variants = compile_kernelset(kernels, targets, output)
        after = {e.key for e in scan_root(output) if e.kind == "kernel"}
        result: dict[str, Any] = {
            "variants": len(variants),
            "new_entries": len(after - before),
            "targets": [str(t) for t in targets],
        }
    elif backend == "command":
        from .warm.command_backend import run_command

        result = run_command(command or [], output, inductor=inductor)
    elif backend == "torch":
        from .warm.torch_backend import warm_model

        if not model:
            raise UsageError("the torch backend needs --model (e.g. opt-125m)")
        runs = warm_model(
            model,
            output,
            [int(x) for x in batch.split(",")],
            [int(x) for x in seq.split(",")],
            dtype.split(","),
        )
        result = {"model": model, "runs": runs}
    elif backend == "vllm":
        from .warm.vllm_backend import VllmWarm, run_vllm

        if not model:
            raise UsageError("the vllm backend needs --model")
        result = run_vllm(
            VllmWarm(
                model=model,
                output=output,
                image=image,
                engine=engine,
                token_file=hf_token_file,
                container_cache_dir=container_cache_dir,
                rocm=rocm,
                gpus=not no_gpu,
                timeout=timeout,
                tarball=tarball,
                extra_args=command or [],
            )
        )
    else:
        raise UsageError(f"unknown backend {backend!r}; use triton, command, torch or vllm")
    _targets, gpus = host_targets()
    producer = detect()
    producer.gpus = gpus
    extra = {"backend": backend}
    if backend == "vllm":
        extra["image"] = image  # the Triton that compiled is the image's, not this host's
    write_record(output, producer, **extra)
    if backend == "vllm" and tarball is not None:
        from .warm.vllm_backend import write_tarball

        write_tarball(output, tarball)
        result["tarball"] = str(tarball)
    result["seconds"] = time.perf_counter() - t0
    result["producer"] = producer.to_dict()
    if as_json:
        _print_json(result)
    else:
        summary = {k: v for k, v in result.items() if k not in ("producer", "new_keys", "runs")}
        out.print(
            f"warmed {output} ({backend}): "
            + ", ".join(f"{k} {v}" for k, v in summary.items() if not isinstance(v, float))
            + f", {result['seconds']:.1f} s"
        )
        for run in result.get("runs", []):
            out.print(f"  {run}")
    if result.get("returncode"):
        raise typer.Exit(result["returncode"])


def main() -> None:
    try:
        app()
    except TcmError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
