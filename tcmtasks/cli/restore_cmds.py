"""Commands on a node: gpu, and pull / extract (one declaration serves both)."""

# Annotations stay live objects here (no ``from __future__ import annotations``): typer would
# otherwise compile and eval every option's annotation string when tcm starts, 13 ms a run.
# Helpers annotated with lazily loaded names (ops.*) quote them.

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .. import ops
from ..errors import CheckFailed, UsageError
from .app import app
from .common import (
    CaCertOpt,
    InsecureOpt,
    JsonOpt,
    PolicyOpt,
    PythonOpt,
    RegistriesConfOpt,
    RegistriesDOpt,
    TargetsOpt,
    TritonOpt,
    db,
    err,
    esc,
    human_size,
    out,
    print_json,
    progress_bars,
    registry_options,
    targets,
    trust_options,
)

if TYPE_CHECKING:
    from ..extract import RestoreReport


@app.command("gpu")
def gpu_cmd(
    python: PythonOpt = None,
    save_profile: Annotated[
        Path | None,
        typer.Option(
            "--save-profile",
            metavar="FILE",
            help="Record GPU 0 as the workload's torch and Triton see it (properties, "
            "capability, Triton target, attention kernel choices, torch/Triton/Python "
            "builds) into FILE, for tcm warm --gpu-profile on machines without it.",
        ),
    ] = None,
    profiles: Annotated[
        bool,
        typer.Option(
            "--profiles",
            help="List the GPU profiles tcm ships (names for tcm warm --gpu-profile and "
            "recipes' gpu_profiles:), each with the runtime it needs.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show this host's GPU targets and Triton build.

    Targets from nvidia-ml-py, amdsmi or the KFD sysfs, each with its device's name; the
    Triton version, Python ABI, triton_key() and ptxas that lookups will use (torch_ptxas:
    the one torch's build ships, which torch.compile's kernels use; triton_dir: where Triton
    is imported from, which HIP keys hold): tcm's own, or those of the interpreter given with
    --python. --save-profile records a GPU profile
    (check it into your repo; CI then warms torch.compile caches for this GPU without one).

    Examples: tcm gpu; tcm gpu --python /opt/venv/bin/python --json;
    tcm gpu --python /opt/venv/bin/python --save-profile h200.json
    """
    if profiles:
        _list_profiles(as_json)
        return
    if save_profile is not None:
        profile = ops.save_gpu_profile(save_profile, python=python)
        if as_json:
            print_json(profile.to_dict())
        else:
            out.print(
                f"recorded {esc(profile.label)}, Triton {esc(profile.triton)}, "
                f"{esc(profile.python)}, {len(profile.sdp_choices)} attention cases "
                f"-> {esc(save_profile)}"
            )
        return
    info = ops.gpu(python=python)
    if as_json:
        print_json(info.to_dict())
        return
    if info.targets:
        for t, n in zip(info.targets, info.gpus, strict=False):
            out.print(f"  {t}  (warp {t.warp_size})  {esc(n)}")
    else:
        out.print(
            "  no GPU found (nvidia-ml-py / amdsmi / /sys/class/kfd); "
            "tcm pull and extract take --target to choose targets"
        )
    out.print(f"  [dim]runtime[/] {esc(info.runtime)}")
    for k, v in info.producer.to_dict().items():
        out.print(f"  [dim]{k}[/] {esc(v)}")


def _list_profiles(as_json: bool) -> None:
    from ..gpuprofile import load, shipped

    found = {name: load(path) for name, path in shipped().items()}
    if as_json:
        print_json({
            name: {"gpu": p.name, "target": str(p.triton_target),
                   "runtime": p.runtime.describe(), "file": str(shipped()[name])}
            for name, p in found.items()
        })  # fmt: skip
        return
    for name, p in found.items():
        out.print(
            f"  {esc(name)}  {esc(p.name)} ({p.triton_target})  needs {esc(p.runtime.describe())}"
        )


PULL_HELP = """Restore a cache image on this node.

Checks the image against the host's GPUs and Triton before downloading, keeps the
kernels that will load and hit here, extracts safely, rewrites group paths, installs
each entry atomically, and reports what was skipped and why. From an image warmed for
a fleet it installs this GPU's Inductor and vLLM units only (--gpu NAME: another's).

Examples: tcm pull docker://registry:5000/team/cache:v1;
tcm pull docker://registry:5000/team/cache:v1 --python /opt/venv/bin/python --dry-run
"""
EXTRACT_HELP = """tcm pull for a local image: oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE.

The same checks, selection and atomic install as tcm pull, with no registry involved.

Examples: tcm extract oci:build/img:v1; tcm extract oci-archive:cache.tar -c /tmp/cache --all
"""


def restore_cmd(
    ctx: typer.Context,
    ref: Annotated[
        str,
        typer.Argument(
            help="Image reference: docker://HOST/REPO:TAG (pull), oci:, oci-archive:, "
            "docker-archive:."
        ),
    ],
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            "-c",
            help="The Triton cache to install into.",
            show_default="TRITON_CACHE_DIR, else ~/.triton/cache",
        ),
    ] = None,
    target: TargetsOpt = None,
    all_targets: Annotated[
        bool, typer.Option("--all", help="Keep every entry, whatever its target.")
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Refuse when the image's Triton build or ptxas differs from the host's.",
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace entries the cache already has.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show what would be installed and skipped; write nothing."),
    ] = False,
    max_size: Annotated[
        str | None,
        typer.Option(
            "--max-size",
            help="Refuse layers that unpack to more than SIZE (a guard against bombs).",
            show_default="64G",
        ),
    ] = None,
    lock_timeout: Annotated[
        float,
        typer.Option(
            "--lock-timeout",
            help="Wait up to SECONDS for another tcm changing the same cache (pods of one "
            "node sharing it start together), saying whom it waits for; then exit 4.",
            min=0,
        ),
    ] = 300.0,
    inductor_dir: Annotated[
        Path | None,
        typer.Option(
            "--inductor-dir",
            help="Where an Inductor part goes.",
            show_default="TORCHINDUCTOR_CACHE_DIR, else /tmp/torchinductor_$USER",
        ),
    ] = None,
    vllm_dir: Annotated[
        Path | None,
        typer.Option(
            "--vllm-dir",
            help="Where a vLLM part goes.",
            show_default="VLLM_CACHE_ROOT, else ~/.cache/vllm",
        ),
    ] = None,
    same_paths: Annotated[
        bool,
        typer.Option(
            "--same-paths",
            help="Restore Inductor and vLLM parts to the producer's own paths, when they lie "
            "below --inductor-dir, --vllm-dir or a --same-paths-root.",
        ),
    ] = False,
    same_paths_root: Annotated[
        list[Path] | None,
        typer.Option(
            "--same-paths-root",
            metavar="DIR",
            help="With --same-paths: a dir the producer's paths may lie below; repeatable.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Install what was built for another runtime too (another Triton build, Python "
            "ABI, torch or GPU): it will miss; the report says so.",
        ),
    ] = False,
    gpu: Annotated[
        list[str] | None,
        typer.Option(
            "--gpu",
            metavar="NAME",
            help="From an image warmed for several GPUs, install this GPU's Inductor/vLLM "
            "units (a name tcm inspect shows, or its start: nvidia-h100), and unless "
            "--target its target's entries; repeatable.",
            show_default="this host's GPU",
        ),
    ] = None,
    python: PythonOpt = None,
    triton: TritonOpt = None,
    insecure_host: InsecureOpt = None,
    ca_cert: CaCertOpt = None,
    policy: PolicyOpt = None,
    registries_d: RegistriesDOpt = None,
    registries_conf: RegistriesConfOpt = None,
    as_json: JsonOpt = False,
) -> None:
    local = ctx.info_name == "extract"
    if local and (insecure_host or ca_cert):
        raise UsageError("--insecure-host and --ca-cert are for registries: use tcm pull")
    with progress_bars() as progress:
        options = ops.RestoreOptions(
            cache_dir=cache_dir,
            inductor_dir=inductor_dir,
            vllm_dir=vllm_dir,
            targets=targets(target) or None,
            all_targets=all_targets,
            gpus=gpu or None,
            python=python,
            triton=triton,
            strict=strict,
            overwrite=overwrite,
            force=force,
            dry_run=dry_run,
            max_size=max_size,
            same_paths=same_paths,
            same_paths_root=same_paths_root,
            lock_timeout=lock_timeout,
        )
        report = ops.pull(
            ref,
            options,
            registry=None if local else registry_options(insecure_host, ca_cert),
            trust=trust_options(policy, registries_d, registries_conf),
            local_only=local,
            db=db(),
            progress=progress,
        )
    if as_json:
        print_json(report.to_dict())
    else:
        _report(report)
    failures = len(report.failed) + sum(len(p.failed) for p in report.parts)
    if failures:
        raise CheckFailed(
            f"{failures} selected entr{'y was' if failures == 1 else 'ies were'} not installed "
            "(listed above); the rest is in place"
        )


def _report(report: "RestoreReport") -> None:
    rt = report.runtime
    what = f"Triton {rt.get('triton_version') or '?'} {rt.get('python') or ''}".strip()
    err.print(f"[dim]selecting for {esc(what)} ({esc(rt.get('source'))})[/]")
    if report.served_by:
        err.print(f"served by {esc(report.served_by)}")
    for requirement in report.verified:
        err.print(f"verified: {esc(requirement)}")
    for w in report.producer_warnings:
        err.print(f"[yellow]warning[/] keys may not match this host: {esc(w)}")
    for item in report.skipped:
        out.print(
            f"[yellow]skip[/] {esc(str(item.get('key'))[:12])} {esc(item.get('name'))} "
            f"{esc(item.get('target'))}: {esc(item['reason'])}"
        )
    for p in report.parts:
        if p.skipped:
            out.print(f"[yellow]skip[/] {p.kind} part ({p.files} files): {esc(p.skipped)}")
            continue
        for failure in p.failed:
            err.print(f"[red]failed[/] {p.kind}: {esc(failure)}")
        verb = "would install" if report.dry_run else "installed"
        kept = f", {p.existing} already there" if p.existing else ""
        out.print(
            f"{p.kind}: {verb} {p.installed} units ({p.files} files) into {esc(p.dest)}{kept}"
        )
        for other, units in sorted(p.other_gpus.items()):
            out.print(
                f"[yellow]skip[/] {p.kind}: {len(units)} units of {esc(other)}: "
                f"{esc(_installing_for(report))} (--gpu NAME or --all installs them)"
            )
    for item in report.failed:
        err.print(
            f"[red]failed[/] {esc(str(item.get('key'))[:12])} {esc(item.get('name'))}: "
            f"{esc(item['reason'])}"
        )
    for reason, n in report.skip_reasons():
        out.print(f"[yellow]{n} skipped[/]: {esc(reason)}")
    verb = "would keep" if report.dry_run else "installed"
    dests = sorted({str(k.get("dest") or report.cache_dir) for k in report.kept})
    into = ", ".join(dests) or report.cache_dir
    out.print(
        f"{esc(report.reference)}: {verb} {len(report.kept)} entries"
        + ("" if report.dry_run else f" ({human_size(report.bytes)}) into {esc(into)}")
        + f", skipped {len(report.skipped)}, {report.seconds:.2f} s"
    )


def _installing_for(report: "RestoreReport") -> str:
    gpus = ", ".join(report.gpus or [])
    return f"this node installs {gpus}'s" if gpus else "not this node's GPU"


app.command("pull", help=PULL_HELP)(restore_cmd)
app.command("extract", help=EXTRACT_HELP)(restore_cmd)
