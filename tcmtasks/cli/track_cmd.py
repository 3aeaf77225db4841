"""``tcm track``: run a command under tcm's cache manager and report what it compiled."""

# Annotations stay live objects here (no ``from __future__ import annotations``): typer would
# otherwise compile and eval every option's annotation string when tcm starts, 13 ms a run.
# Helpers annotated with lazily loaded names (ops.*) quote them.

from pathlib import Path
from typing import Annotated

import typer

from .. import ops
from ..errors import CheckFailed
from ..track import TrackStats
from .app import app
from .common import JsonOpt, Table, db, err, esc, print_json


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
            help="Exit 1 when the command compiled anything: a Triton kernel in any process, "
            "or an Inductor FX or AOTAutograd graph.",
        ),
    ] = False,
    no_index: Annotated[
        bool, typer.Option("--no-index", help="Do not add the hits and misses to the index.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a command and report what it compiled, at every level.

    Triton's lookups, hits, misses and compile time per kernel, in every process the command
    starts (Inductor's compile workers too), and for torch.compile, Inductor's FX-graph and
    AOTAutograd cache hits and misses and the kernels loaded from FX-graph bundles. The report
    goes to stderr (--json prints it on stdout after the command's own output); the Triton
    stats are added to the index.

    Example: tcm track --require-hits -- python serve.py
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
        where = ", ".join(stats.cache_dirs) or "none seen"
        raise CheckFailed(
            f"--require-hits: the run {stats.verdict()}: the caches ({where}) did not cover "
            "this workload"
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
    color = "green" if stats.compiled_nothing else "yellow"
    err.print(f"[{color}]{esc(stats.verdict())}[/]")
    err.print(
        f"  triton    {stats.lookups} lookups: {stats.hits} hits, {stats.misses} misses"
        + (f", {stats.compile_seconds:.2f} s compiling" if stats.compile_seconds else "")
        + (f" ({esc(', '.join(stats.cache_dirs))})" if stats.cache_dirs else "")
    )
    ind = stats.inductor
    if ind is not None:
        err.print(
            f"  inductor  FX graphs: {ind.fx_hits} hits, {ind.fx_misses} misses"
            + (f", {ind.fx_bypasses} not cacheable" if ind.fx_bypasses else "")
            + f"; AOTAutograd: {ind.aot_hits} hits, {ind.aot_misses} misses"
            + (f", {ind.aot_bypasses} not cacheable" if ind.aot_bypasses else "")
            + (
                f", {ind.aot_restarted} in attempts torch restarted (never cached)"
                if ind.aot_restarted
                else ""
            )
            + f"; {ind.bundled_kernels} kernels loaded from FX-graph bundles"
        )
