"""What every command module shares: the consoles, option sets declared once, formatting,
progress bars and confirmation. Nothing here decides what an operation does."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import UsageError
from ..progress import Progress as ProgressFn
from ..progress import ProgressEvent
from ..prune import Plan
from ..selection import Criteria, parse_age, parse_size
from ..targets import Target

if TYPE_CHECKING:
    from ..oci.transfer import RegistryOptions
    from ..trust import SignOptions, TrustOptions

# Output that is not a terminal (| less, | grep, a log) is never wrapped: data (paths, keys,
# JSON-looking values) stays on one line; tables take the width their content needs.
NO_WRAP = 10_000
# emoji=False: data such as "oci:x:v1" or "cuda:100:" must never turn into emoji
out = Console(
    highlight=False,
    emoji=False,
    soft_wrap=True,
    width=None if sys.stdout.isatty() else NO_WRAP,
)
err = Console(
    stderr=True,
    highlight=False,
    emoji=False,
    soft_wrap=True,
    width=None if sys.stderr.isatty() else NO_WRAP,
)

state: dict[str, Any] = {"db": None}


def db() -> Path | None:
    """The --db given to ``tcm`` (None: TCM_DB or the default path)."""
    value = state["db"]
    return Path(value) if value is not None else None


# -- option sets, declared once ------------------------------------------------------------------

# help panels: options that go together, shown together
SELECT = "Selection (which entries)"
REGISTRY = "Registry"
RUNTIME = "The workload's runtime (when it is not tcm's)"
TRUST = "Trust (containers' policy.json, registries.d, registries.conf)"
SIGN = "Signing (what pulls under a signedBy or sigstoreSigned policy check)"

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
NameOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--name", "-n", help="Kernel name, exact or glob (repeatable).", rich_help_panel=SELECT
    ),
]
BackendOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--backend", "-b", help="cuda, hip or rocm (an alias of hip).", rich_help_panel=SELECT
    ),
]
ArchOpt = Annotated[
    list[str] | None,
    typer.Option("--arch", "-a", help="e.g. 90, sm_90, gfx942.", rich_help_panel=SELECT),
]
VersionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--triton-version",
        "-t",
        help="3.6 (any 3.6.x), 3.6.0, a glob, or 'unknown' (written before 3.3).",
        rich_help_panel=SELECT,
    ),
]
OlderOpt = Annotated[
    str | None,
    typer.Option(
        "--older-than",
        help="Newest file older than AGE (units s m h d w, e.g. 7d).",
        rich_help_panel=SELECT,
    ),
]
YoungerOpt = Annotated[
    str | None,
    typer.Option("--younger-than", help="Newest file younger than AGE.", rich_help_panel=SELECT),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show what would be removed; change nothing.")
]
InsecureOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--insecure-host",
        help="HOST[:PORT] reached without TLS verification, or over plain HTTP (repeatable); "
        "every other registry is verified.",
        rich_help_panel=REGISTRY,
    ),
]
CaCertOpt = Annotated[
    Path | None,
    typer.Option(
        "--ca-cert", help="PEM file of a CA to trust for registries.", rich_help_panel=REGISTRY
    ),
]
PythonOpt = Annotated[
    Path | None,
    typer.Option(
        "--python",
        help="The workload's interpreter: select for its Triton build, Python ABI and torch "
        "(asked in a subprocess) instead of tcm's own.",
        rich_help_panel=RUNTIME,
    ),
]
TritonOpt = Annotated[
    str | None,
    typer.Option(
        "--triton",
        help="The workload's Triton version, when its interpreter is not on this machine.",
        rich_help_panel=RUNTIME,
    ),
]
PolicyOpt = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        help="containers-policy.json(5) to enforce: insecureAcceptAnything, reject, signedBy "
        "(GPG), sigstoreSigned (cosign keys). A refused image exits 3 before any layer is "
        "fetched.",
        show_default="~/.config/containers/policy.json, else /etc/containers/policy.json",
        rich_help_panel=TRUST,
    ),
]
RegistriesDOpt = Annotated[
    Path | None,
    typer.Option(
        "--registries-d",
        help="containers-registries.d(5) dir naming the lookaside stores of GPG signatures.",
        show_default="~/.config/containers/registries.d, else /etc/containers/registries.d",
        rich_help_panel=TRUST,
    ),
]
RegistriesConfOpt = Annotated[
    Path | None,
    typer.Option(
        "--registries-conf",
        help="containers-registries.conf(5) (v2): mirrors tried before the origin, "
        "rewritten locations, blocked registries.",
        show_default="$CONTAINERS_REGISTRIES_CONF, ~/.config/containers/registries.conf, "
        "else /etc/containers/registries.conf",
        rich_help_panel=TRUST,
    ),
]
SignByOpt = Annotated[
    str | None,
    typer.Option(
        "--sign-by",
        metavar="FINGERPRINT",
        help="GPG-sign the pushed manifest with this key of your keyring (GNUPGHOME), into "
        "the lookaside-staging store registries.d names (as skopeo --sign-by).",
        rich_help_panel=SIGN,
    ),
]
SigstoreKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--sign-by-sigstore-private-key",
        metavar="KEY",
        help="Sign with a cosign key file: a sha256-<digest>.sig image beside the pushed one.",
        rich_help_panel=SIGN,
    ),
]
PassphraseOpt = Annotated[
    Path | None,
    typer.Option(
        "--sign-passphrase-file",
        metavar="FILE",
        help="The signing key's passphrase: the file's first line (else asked on a terminal, "
        "else empty).",
        rich_help_panel=SIGN,
    ),
]
TargetsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        help="A target such as cuda:90 or rocm:gfx942 (repeatable).",
        rich_help_panel=SELECT,
    ),
]


def criteria(
    name: list[str] | None,
    backend: list[str] | None,
    arch: list[str] | None,
    triton_version: list[str] | None,
    older_than: str | None,
    younger_than: str | None,
    kinds: list[str] | None = None,
) -> Criteria:
    """The filters list, prune and package share, parsed."""
    c = Criteria(
        names=name or [],
        backends=backend or [],
        archs=arch or [],
        triton_versions=triton_version or [],
        older_than=parse_age(older_than) if older_than else None,
        younger_than=parse_age(younger_than) if younger_than else None,
    )
    if kinds is not None:
        c.kinds = kinds
    return c


def targets(values: list[str] | None) -> list[Target]:
    """``--target`` values, repeated or comma-separated."""
    return [Target.parse(x) for v in values or [] for x in v.split(",") if x.strip()]


def registry_options(
    insecure_host: list[str] | None, ca_cert: Path | None, chunk_size: str | None = None
) -> RegistryOptions:
    if ca_cert is not None and not ca_cert.is_file():
        raise UsageError(f"--ca-cert {ca_cert} does not exist")
    from ..oci.transfer import RegistryOptions  # (ssl, urllib: 25 ms a command without)

    return RegistryOptions(
        insecure_hosts=insecure_host or [],
        ca_cert=ca_cert,
        chunk_size=parse_size(chunk_size) if chunk_size else None,
    )


def trust_options(
    policy: Path | None, registries_d: Path | None, registries_conf: Path | None
) -> TrustOptions:
    from ..trust import TrustOptions

    return TrustOptions(policy, registries_d, registries_conf)


def sign_options(
    sign_by: str | None,
    sigstore_key: Path | None,
    passphrase_file: Path | None,
    registries_d: Path | None,
) -> SignOptions:
    from ..trust import SignOptions

    if passphrase_file is not None and not (sign_by or sigstore_key):
        raise UsageError(
            "--sign-passphrase-file goes with --sign-by or --sign-by-sigstore-private-key"
        )
    return SignOptions(sign_by, sigstore_key, passphrase_file, registries_d)


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


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def Table(**kwargs: Any) -> Any:
    """rich's Table, imported when a command prints one (15 ms a start-up without)."""
    from rich.table import Table as RichTable

    return RichTable(**kwargs)


def print_json(data: Any) -> None:
    """Indented for a person at a terminal; one line for a program (json's C encoder: an
    indented dump runs the pure-Python one, 0.5 s for a 20,000-action plan)."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(data, indent=indent, default=str) + "\n")


def print_json_texts(texts: Iterable[str]) -> None:
    """A JSON array of ready-made JSON values written as they come, one per line (what
    ``sqlite3 -json`` prints): memory stays flat however long the list."""
    write = sys.stdout.write
    sep = "[\n"
    for text in texts:
        write(sep + text)
        sep = ",\n"
    write("[]\n" if sep == "[\n" else "\n]\n")


def esc(value: object) -> str:
    """Data shown inside rich markup: never interpreted as markup itself."""
    return escape(str(value))


# -- progress and confirmation -------------------------------------------------------------------


@contextlib.contextmanager
def progress_bars() -> Iterator[ProgressFn | None]:
    """A progress callback drawing one transient line per task on stderr (done/total, rate,
    time left); None (no callback, no cost) when stderr is not a terminal or with --quiet."""
    if state.get("quiet") or not err.is_terminal:
        yield None
        return
    from rich.progress import (  # (30 ms of start-up that piped and quiet runs do not pay)
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}
    done_col, speed_col = DownloadColumn(), TransferSpeedColumn()

    def update(event: ProgressEvent) -> None:
        if not bars.live.is_started:
            bars.start()
        if event.task not in tasks:
            tasks[event.task] = bars.add_task(event.task, total=event.total, count="")
        task_id = tasks[event.task]
        bars.update(task_id, completed=event.done, total=event.total)
        task = bars.tasks[task_id]
        if event.unit == "bytes":
            count = f"{done_col.render(task)} {speed_col.render(task)}"
        else:
            rate = f" {task.speed:,.0f}/s" if task.speed else ""
            count = f"{event.done:,}/{event.total:,}{rate}" if event.total else f"{event.done:,}"
        bars.update(task_id, count=count)

    try:
        yield update
    finally:
        if bars.live.is_started:
            bars.stop()


def confirm_removal(*, yes: bool, as_json: bool, show: Any) -> Any:
    """The ``confirm`` callback of prune/gc: show the plan, then ask (or not)."""

    def confirm(plan: Plan) -> bool:
        if not as_json:
            show(plan)
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageError(
                "not a terminal, so cannot ask: add --yes to go ahead, or --dry-run to only look"
            )
        return typer.confirm(f"Remove {human_size(plan.bytes)}?", err=True)

    return confirm
