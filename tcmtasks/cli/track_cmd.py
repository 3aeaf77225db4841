"""``tcm track``: run a command under tcm's cache manager and report what it compiled."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .. import ops
from ..errors import CheckFailed
from ..track import TrackStats
from .app import app
from .common import JsonOpt, db, err, esc, print_json


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
    result = ops.track(command, cache_dir=cache_dir, record=not no_index, db=db())
    if as_json:
        print_json(result.to_dict())
    else:
        _print_track(result.stats)
    if result.returncode != 0:
        raise typer.Exit(result.returncode if 0 < result.returncode < 256 else 1)
    if require_hits and result.compiled:
        stats = result.stats
        raise CheckFailed(
            f"--require-hits: {stats.misses} kernel(s) were compiled: the cache "
            f"({', '.join(stats.cache_dirs) or 'none'}) did not cover this workload"
        )


def _print_track(stats: TrackStats) -> None:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("NAME", "KEY", "HITS", "MISSES", "COMPILE s"):
        table.add_column(col, justify="left" if col in ("NAME", "KEY") else "right")
    for k in stats.kernels:
        table.add_row(
            esc(k.name),
            esc(k.key[:12]),
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
        + (f" ({esc(', '.join(stats.cache_dirs))})" if stats.cache_dirs else "")
    )
