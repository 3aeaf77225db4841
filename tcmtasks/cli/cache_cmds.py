"""Commands over caches in place: index, list, show, doctor, prune, gc."""

# Annotations stay live objects here (no ``from __future__ import annotations``): typer would
# otherwise compile and eval every option's annotation string when tcm starts, 13 ms a run.
# Helpers annotated with lazily loaded names (ops.*) quote them.

import contextlib
import shutil
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

import typer

from .. import ops
from ..cache.entries import Entry, EntryKind
from ..errors import CheckFailed, UsageError
from ..prune import Plan
from ..selection import SORT_KEYS
from .app import app
from .common import (
    ArchOpt,
    BackendOpt,
    CacheDirs,
    DryRunOpt,
    JsonOpt,
    NameOpt,
    OlderOpt,
    Table,
    VersionOpt,
    YesOpt,
    YoungerOpt,
    confirm_removal,
    criteria,
    db,
    err,
    esc,
    human_age,
    human_size,
    out,
    plural,
    print_json,
    print_json_texts,
    progress_bars,
)
from .table import Cell, Column, colors_wanted, render


def status(e: Entry) -> str:
    worst = (
        "error"
        if any(p.severity == "error" for p in e.problems)
        else ("warning" if e.problems else "")
    )
    color = {"hit": "green", "foreign-hit": "yellow", "miss": "red", "broken": "red"}.get(
        e.lookup, "white"
    )
    text = f"[{color}]{e.lookup}[/]" if e.lookup else esc(e.kind)
    if worst:
        color = "red" if worst == "error" else "yellow"
        text += f" [{color}]({plural(len(e.problems), 'problem')})[/]"
    return text


@app.command("index")
def index_cmd(
    cache_dir: CacheDirs = None,
    rescan: Annotated[
        bool,
        typer.Option(
            "--rescan", help="Re-read every entry, not only those whose directory changed."
        ),
    ] = False,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="The index is damaged: move it aside (kept as <db>.damaged-<time>) and build a "
            "new one, keeping the tracked hits it can still read.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index cache roots into the SQLite database (incremental: unchanged entries are skipped).

    Without --cache-dir: the default locations and every root indexed before.

    Examples: tcm index; tcm index -c ~/.triton/cache --rescan
    """
    with progress_bars() as progress:
        result = ops.index(cache_dir, rescan=rescan, rebuild=rebuild, db=db(), progress=progress)
    if as_json:
        print_json(result.to_dict())
        return
    if (rb := result.rebuilt) is not None:
        out.print(
            f"moved the damaged index to {esc(rb.backup)}; carried over the tracked use of "
            f"{rb.salvaged} entries" + (f" ({esc(rb.lost)})" if rb.lost else "")
        )
    for r in result.roots:
        group = f", {esc(r.group)}" if r.group else ""
        out.print(f"  {esc(r.path)}  [dim]({esc(r.origin)}{group})[/]")
    s = result.stats
    out.print(
        f"indexed {plural(s.roots, 'root')}: {s.seen} entries "
        f"({s.added} new, {s.updated} changed, {s.removed} gone, "
        f"{s.unchanged} unchanged) in {s.seconds:.2f} s -> {esc(result.db)}"
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
            help="Entry kinds: kernel (default), module, autotune, in-flight, empty, unknown; "
            "of Inductor and vLLM caches: fx-graph, aot-graph, code, tuning, artifact.",
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
    wide: Annotated[
        bool,
        typer.Option(
            "--wide",
            "-w",
            help="Every column and every value whole, whatever the "
            "terminal's width (output that is not a terminal is always whole).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List cached kernels, filtered and sorted.

    Refreshes the index first; that is cheap. Rows stream: tcm list | head returns at once.

    Examples: tcm list --arch 90 --sort -size; tcm list --name 'triton_poi_*' --json
    """
    kinds = [] if all_kinds else (kind or [EntryKind.KERNEL])
    c = criteria(name, backend, arch, triton_version, older_than, younger_than, kinds)
    c.min_hits, c.max_hits = min_hits, max_hits
    with contextlib.ExitStack() as stack:
        with progress_bars() as progress:  # only while the index is refreshed
            if as_json:
                texts = stack.enter_context(
                    ops.stream_json(
                        cache_dir,
                        criteria=c,
                        sort=sort,
                        refresh_index=not no_refresh,
                        db=db(),
                        progress=progress,
                    )
                )
            else:
                listing = stack.enter_context(
                    ops.stream_entries(
                        cache_dir,
                        criteria=c,
                        sort=sort,
                        refresh_index=not no_refresh,
                        with_files=False,
                        db=db(),
                        progress=progress,
                    )
                )
        if as_json:
            print_json_texts(texts.entries)
        else:
            _entry_table(listing, wide)


_LIST_COLUMNS = (
    Column("KEY"), Column("NAME", min_width=12), Column("TARGET", drop=3),
    Column("TRITON", drop=5), Column("W/S", right=True, drop=7),
    Column("SIZE", right=True, drop=4), Column("AGE", right=True, drop=6),
    Column("HITS", right=True, drop=8), Column("STATUS"),
    Column("ROOT", min_width=10, cut_start=True, drop=2),
)  # fmt: skip
_LOOKUP_COLOR = {"hit": "green", "foreign-hit": "yellow", "miss": "red", "broken": "red"}


def _entry_cells(e: Entry, now: float, multi_root: bool) -> list[Cell]:
    worst = "red" if any(p.severity == "error" for p in e.problems) else "yellow"
    state = e.lookup or e.kind
    if e.problems:
        state += f" ({plural(len(e.problems), 'problem')})"
    return [
        (e.key[:12] + ("…" if len(e.key) > 12 else ""), None),
        (e.name or "-", None),
        (str(e.target or "-"), None),
        (e.triton_version or "-", None),
        (f"{e.num_warps}/{e.num_stages}" if e.num_warps is not None else "", None),
        (human_size(e.size), None),
        (human_age(e.mtime, now), None),
        (f"{e.hits}/{e.misses}" if e.last_used else "", None),
        (state, worst if e.problems else _LOOKUP_COLOR.get(e.lookup)),
        (str(e.root) if multi_root else "", "dim"),
    ]


def _entry_table(listing: "ops.Listing[Entry]", wide: bool) -> None:
    """The plain renderer (cli/table.py): rows print as they stream from the index."""
    multi_root = len(listing.roots) > 1
    shown = size = 0

    def rows() -> Iterator[list[Cell]]:
        nonlocal shown, size
        for e in listing.entries:
            shown += 1
            size += e.size
            yield _entry_cells(e, listing.now, multi_root)

    tty = sys.stdout.isatty()
    width = None if wide or not tty else shutil.get_terminal_size().columns
    render(_LIST_COLUMNS, rows(), sys.stdout.write, width=width, color=colors_wanted(sys.stdout))
    sys.stdout.flush()
    out.print(f"[dim]{shown} of {listing.total} entries, {human_size(size)}[/]")


@app.command("show")
def show_cmd(
    key: Annotated[str, typer.Argument(help="Entry key or a unique prefix of it.")],
    cache_dir: CacheDirs = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one entry: its metadata, files and lookup verdict.

    Example: tcm show 2233EIRB (any unique start of a key, as tcm list prints them)
    """
    e = ops.show(key, cache_dir, db=db())
    if as_json:
        print_json(e.to_dict(metadata=True))
        return
    now = datetime.now().timestamp()
    out.print(f"[bold]{esc(e.key)}[/]  {esc(e.path)}")
    rows = [
        ("kind", e.kind), ("name", e.name or "-"), ("target", str(e.target or "-")),
        ("triton", e.triton_version or "unknown"), ("key format", e.key_format),
        ("warps/stages/ctas", f"{e.num_warps}/{e.num_stages}/{e.num_ctas}"),
        ("shared memory", f"{e.shared} B" if e.shared is not None else "-"),
        ("size", f"{human_size(e.size)} in {len(e.files)} files"),
        ("newest file", f"{datetime.fromtimestamp(e.mtime):%Y-%m-%d %H:%M:%S} "
                        f"({human_age(e.mtime, now)})"),
    ]  # fmt: skip
    for label, value in rows:
        out.print(f"  [bold]{label:<18}[/] {esc(value)}")
    out.print(f"  [bold]{'lookup':<18}[/] {status(e)}")
    files = Table(box=None, header_style="bold", title="files", title_justify="left")
    files.add_column("NAME")
    files.add_column("KIND")
    files.add_column("SIZE", justify="right")
    for f in e.files:
        files.add_row(esc(f.name), f.kind, human_size(f.size))
    out.print(files)
    for p in e.problems:
        color = "red" if p.severity == "error" else "yellow"
        out.print(f"  [{color}]{p.severity}[/] {p.code}: {esc(p.message)}")
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
            help="Make the safe repairs: rewrite groups to the entry's current location, "
            "remove write leftovers older than an hour.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check every entry on disk for problems.

    Exits 1 when problems are found (or remain after --fix).

    Examples: tcm doctor; tcm doctor -c ~/.triton/cache --fix
    """
    with progress_bars() as progress:
        result = ops.doctor(cache_dir, fix=fix, db=db(), progress=progress)
    if as_json:
        print_json(result.to_dict())
    else:
        _doctor_report(result)
    if not result.healthy:
        raise CheckFailed()  # the report above says what is wrong


def _doctor_report(result: "ops.DoctorResult") -> None:
    for r in result.repairs:
        color = "yellow" if r.action == "skipped" else "green"
        out.print(f"[{color}]{r.action}[/] {r.key[:12]}  {esc(r.detail)}")
    if result.sick:
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("KEY", no_wrap=True)
        table.add_column("NAME", no_wrap=True)
        table.add_column("SEVERITY", no_wrap=True)
        table.add_column("PROBLEM")
        for e in result.sick:
            for p in e.problems:
                color = "red" if p.severity == "error" else "yellow"
                table.add_row(
                    esc(e.key[:12]),
                    esc(e.name or e.kind),
                    f"[{color}]{p.severity}[/]",
                    f"{p.code}: {esc(p.message)}",
                )
        out.print(table)
    verdict = (
        "[green]healthy[/]"
        if result.healthy
        else f"[red]{len(result.sick)} with problems[/] ({result.errors} with errors)"
    )
    out.print(f"checked {result.checked} entries in {plural(len(result.roots), 'root')}: {verdict}")


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
                e.key[:12], esc(e.name or e.kind), esc(e.target or "-"), human_size(a.bytes),
                esc(a.reason),
            )  # fmt: skip
        out.print(table)
        if len(plan.actions) > limit:
            out.print(f"[dim]... and {len(plan.actions) - limit} more (--json lists all)[/]")
    for e, why in plan.skipped[:limit]:
        out.print(f"[yellow]skip[/] {e.key[:12]} {esc(e.name or e.kind)}: {esc(why)}")
    for note in plan.notes:
        out.print(f"[yellow]note[/] {esc(note)}")
    n = len(plan.actions)
    out.print(
        f"{plan.mode}: {human_size(plan.bytes)} from {plural(n, 'entry', 'entries')}"
        + (f", {len(plan.skipped)} skipped" if plan.skipped else "")
    )


class _Shown:
    """Shows a plan once: before the question, or after a dry run."""

    def __init__(self) -> None:
        self.done = False

    def __call__(self, plan: Plan) -> None:
        if not self.done:
            self.done = True
            _show_plan(plan)


def _run_change(op: object, *, yes: bool, dry_run: bool, as_json: bool, **kwargs: object) -> None:
    """Shared by prune and gc: confirm, run, report; exit 1 when an entry failed."""
    if as_json and not (yes or dry_run):
        raise UsageError("--json cannot ask for confirmation: add --yes or --dry-run")
    shown = _Shown()
    confirm = confirm_removal(yes=yes, as_json=as_json, show=shown)
    with progress_bars() as progress:
        result: ops.ChangeResult = op(  # type: ignore[operator]
            dry_run=dry_run, confirm=confirm, db=db(), progress=progress, **kwargs
        )
    if as_json:
        print_json(result.to_dict())
    else:
        out.print(f"[dim]roots: {esc(', '.join(str(r.path) for r in result.roots))}[/]")
        shown(result.plan)
        applied = result.applied
        if applied is not None:
            for a, msg in applied.failed:
                err.print(f"[red]failed[/] {a.entry.key[:12]}: {esc(msg)}")
            out.print(
                f"freed {human_size(applied.freed)} in {len(applied.done)} entries"
                + (f"; [red]{len(applied.failed)} failed[/]" if applied.failed else "")
            )
    if result.declined:
        raise typer.Exit(1)
    if result.failed:
        raise CheckFailed(f"{len(result.applied.failed)} entries could not be removed")  # type: ignore[union-attr]


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

    Examples: tcm prune --dry-run; tcm prune --dedup --yes; tcm prune --full --older-than 30d
    """
    if full and dedup:
        raise UsageError("--full and --dedup are different modes: pick one")
    if (asm or source) and (full or dedup):
        raise UsageError("--asm and --source belong to the IR mode (no --full/--dedup)")
    c = criteria(name, backend, arch, triton_version, older_than, younger_than)
    if dedup:
        _run_change(ops.dedup, yes=yes, dry_run=dry_run, as_json=as_json, cache_dirs=cache_dir,
                    criteria=c)  # fmt: skip
    else:
        _run_change(ops.prune, yes=yes, dry_run=dry_run, as_json=as_json, cache_dirs=cache_dir,
                    criteria=c, full=full, asm=asm, source=source)  # fmt: skip


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

    Examples: tcm gc --max-size 20G --dry-run; tcm gc --max-age 30d --yes
    """
    _run_change(ops.gc, yes=yes, dry_run=dry_run, as_json=as_json, cache_dirs=cache_dir,
                max_size=max_size, max_age=max_age)  # fmt: skip
