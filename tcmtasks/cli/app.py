"""The ``tcm`` application: global options, and the one place errors become exit codes."""

# Annotations stay live objects here (no ``from __future__ import annotations``): typer would
# otherwise compile and eval every option's annotation string when tcm starts, 13 ms a run.
# Helpers annotated with lazily loaded names (ops.*) quote them.

import copy
import gc
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import BUG_EXIT, INTERRUPTED_EXIT, Interrupted, TcmError
from .common import err, esc, out, state

EXIT_CODES = """\
Exit codes: 0 done; 1 the command's check failed (--require-hits, doctor found problems);
2 usage (bad flag, value, reference, recipe, trust file or key); 3 image or registry
(unreachable, refused, corrupt, hostile, incompatible, untrusted by policy.json); 4 cache or
index state (corrupt, locked); 5 this machine (missing extra or tool, no GPU, disk full);
70 a bug in tcm; 130 interrupted."""


class _Group(TyperGroup):
    """Ctrl-C inside a command becomes ``Interrupted``: typer would otherwise exit 130
    without a word."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted("interrupted: nothing half-done was kept") from None


app = typer.Typer(
    name="tcm",
    cls=_Group,
    help="Manage compile caches (Triton's, and the Inductor and vLLM caches above it): index, "
    "search, check, prune and bound them; warm them; ship them as OCI images (package, push, "
    "inspect); restore them on a node (gpu, pull, extract); track whether a workload hit "
    "them (track).",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        out.print(f"tcm {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    db: Annotated[
        Path | None,
        typer.Option(
            "--db",
            envvar="TCM_DB",
            help="The index database.",
            show_default="~/.local/share/tcm/index.db",
        ),
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv for debug).")
    ] = 0,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No progress bars and no log lines: results and errors only."
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    state["db"] = db
    state["quiet"] = quiet
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                        handlers=[_RichWhenUsed()])  # fmt: skip


class _RichWhenUsed(logging.Handler):
    """rich's log handler, imported at the first record (10 ms of every run's start-up,
    for the few runs that log anything)."""

    def __init__(self) -> None:
        super().__init__()
        self._rich: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._rich is None:
            from rich.logging import RichHandler

            self._rich = RichHandler(console=err, show_path=False, markup=False)
            self._rich.setFormatter(self.formatter)
        self._rich.emit(record)


#: What a value is, in the help's words; any other option shows its own name (--sort SORT).
_METAVARS = {
    "cache_dir": "DIR", "cache_dirs": "DIR", "output": "DIR", "dest": "DIR", "db": "FILE",
    "ca_cert": "FILE", "older_than": "AGE", "younger_than": "AGE", "max_age": "AGE",
    "max_size": "SIZE", "insecure_host": "HOST[:PORT]", "level": "N", "batch": "N",
    "jobs": "N", "python": "PYTHON", "triton_version": "VERSION", "mount_path": "PATH",
    "min_hits": "N", "max_hits": "N", "seq": "N,...", "chunk_size": "SIZE",
}  # fmt: skip


def _name_values(cmd: Any) -> None:
    """Give every parameter a metavar that says what to type: typer shows its type names
    otherwise (``<path>``, ``TEXT``); a flag takes no value and shows none."""
    make_help = cmd.get_help_option

    def get_help_option(ctx: Any) -> Any:  # made anew for each --help: a flag, no value
        opt = make_help(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt

    cmd.get_help_option = get_help_option
    for p in getattr(cmd, "params", ()):
        if p.metavar is not None:
            continue
        if getattr(p, "is_flag", False) or getattr(p, "count", False):
            p.metavar = ""
            continue
        p.metavar = _METAVARS.get(p.name or "") or (p.name or "value").upper().replace("_", "-")
        if not hasattr(p, "is_flag"):  # an argument: its name column says it already
            p.metavar += "..." if p.nargs != 1 else ""
            p.type = copy.copy(p.type)  # (types are shared between parameters)
            p.type.get_metavar = lambda *args, **kwargs: ""
    for sub in getattr(cmd, "commands", {}).values():
        _name_values(sub)


def command() -> Any:
    """The click command behind ``tcm``, with its help's metavars set."""
    cmd = typer.main.get_command(app)
    _name_values(cmd)
    return cmd


def main() -> None:
    """Run ``tcm``: a TcmError ends in one line and its exit code; anything else is a bug,
    shown as one line (the traceback with ``TCM_DEBUG=1``)."""
    # A short-lived process that reads tens of thousands of index rows into acyclic objects:
    # the default collector ran ~20 full passes over them (0.7 s of a 3 s dedup of 20,000).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        command()(prog_name="tcm")
    except Interrupted as exc:
        err.print(f"[yellow]{esc(exc)}[/]", soft_wrap=True)
        sys.exit(exc.exit_code)
    except TcmError as exc:
        if str(exc):  # empty: the command has reported the failure itself
            err.print(f"[red]error:[/] {esc(exc)}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # outside a command (while starting up)
        err.print("[yellow]interrupted[/]")
        sys.exit(INTERRUPTED_EXIT)
    except BrokenPipeError:
        # a reader that stopped early (tcm list | head): stop quietly, as other tools do
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stdout.fileno())
        sys.exit(0)
    except Exception as exc:
        if os.environ.get("TCM_DEBUG"):
            traceback.print_exc()
        err.print(
            f"[red]internal error:[/] {esc(type(exc).__name__)}: {esc(exc)}. This is a bug in tcm "
            f"{__version__}: please report it to the tcm developers with the output of the "
            "same command run with TCM_DEBUG=1",
            soft_wrap=True,
        )
        sys.exit(BUG_EXIT)
