"""Commands that make and move images: package, push, inspect."""

# Annotations stay live objects here (no ``from __future__ import annotations``): typer would
# otherwise compile and eval every option's annotation string when tcm starts, 13 ms a run.
# Helpers annotated with lazily loaded names (ops.*) quote them.

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import ops
from .app import app
from .common import (
    ArchOpt,
    BackendOpt,
    CaCertOpt,
    InsecureOpt,
    JsonOpt,
    NameOpt,
    OlderOpt,
    PassphraseOpt,
    PythonOpt,
    RegistriesDOpt,
    SignByOpt,
    SigstoreKeyOpt,
    Table,
    TargetsOpt,
    TritonOpt,
    VersionOpt,
    YoungerOpt,
    criteria,
    db,
    err,
    esc,
    human_size,
    out,
    print_json,
    progress_bars,
    registry_options,
    sign_options,
    targets,
)


@app.command("package")
def package_cmd(
    cache_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Cache dirs to package: Triton caches, an Inductor cache dir, a vLLM cache "
            "dir; several go into one image.",
            show_default=False,
        ),
    ],
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
    target: TargetsOpt = None,
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
    sign_by: SignByOpt = None,
    sign_by_sigstore_private_key: SigstoreKeyOpt = None,
    sign_passphrase_file: PassphraseOpt = None,
    registries_d: RegistriesDOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a reproducible OCI image of compile caches (no daemon).

    One layer: io.triton.manifest/manifest.json, the healthy Triton kernel entries in
    io.triton.cache/<KEY>/ (MCV labels), and whole Inductor and vLLM caches in
    io.inductor.cache/ and io.vllm.cache/. SOURCE_DATE_EPOCH sets the timestamps; the same
    input gives the same digest.

    Examples: tcm package ~/.triton/cache oci:build/img:v1 --target cuda:90;
    tcm package /tmp/torchinductor_$USER docker://registry:5000/team/opt:v1
    """
    with progress_bars() as progress:
        result = ops.package(
            cache_dirs,
            ref,
            criteria=criteria(name, backend, arch, triton_version, older_than, younger_than),
            targets=targets(target),
            compression=compression,
            level=level,
            mount_path=mount_path,
            builder=builder,
            registry=registry_options(insecure_host, ca_cert),
            db=db(),
            progress=progress,
            sign=sign_options(
                sign_by, sign_by_sigstore_private_key, sign_passphrase_file, registries_d
            ),
        )
    for e, why in result.skipped:
        err.print(f"[yellow]skip[/] {e.key[:12]} {esc(e.name)}: {esc(why)}")
    if as_json:
        print_json(result.to_dict())
    elif result.builder != "tcm":
        out.print(
            f"packaged {len(result.entries)} entries with {result.builder} -> "
            f"{esc(result.reference)}\n{result.digest}"
        )
    else:
        extra = "".join(
            f" + {p.kind} {len(p.files)} files ({human_size(p.bytes)})" for p in result.parts
        )
        out.print(
            f"packaged {len(result.entries)} entries ({human_size(result.cache_size_bytes)})"
            f"{extra}, layer {human_size(result.layer_size or 0)} -> {esc(result.reference)}\n"
            f"{result.digest}"
        )
    if not as_json:
        _signed_and_pinned(result.signatures, result.pinned)


def _signed_and_pinned(signatures: list[str], pinned: str | None) -> None:
    for line in signatures:
        err.print(f"signed: {esc(line)}")
    if pinned:
        err.print(f"pin it: {esc(pinned)}")


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
    sign_by: SignByOpt = None,
    sign_by_sigstore_private_key: SigstoreKeyOpt = None,
    sign_passphrase_file: PassphraseOpt = None,
    registries_d: RegistriesDOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy an image between any two references.

    A registry, an OCI layout or an archive. Blobs the destination already has are skipped;
    every blob is verified as it streams.

    Examples: tcm push oci:build/img:v1 docker://registry:5000/team/cache:v1;
    tcm push docker://registry:5000/team/cache:v1 oci-archive:cache.tar
    """
    opts = registry_options(insecure_host, ca_cert, chunk_size)
    sign = sign_options(sign_by, sign_by_sigstore_private_key, sign_passphrase_file, registries_d)
    with progress_bars() as progress:
        r = ops.push(src, dest, registry=opts, progress=progress, sign=sign)
    if as_json:
        print_json(r.to_dict())
    else:
        out.print(
            f"{esc(src)} -> {esc(dest)}: {r.copied} blobs copied ({human_size(r.bytes)}), "
            f"{r.skipped} already there, {r.seconds:.2f} s\n{r.digest}"
        )
        _signed_and_pinned(r.signatures, r.pinned)


@app.command("inspect")
def inspect_cmd(
    ref: Annotated[str, typer.Argument(help="Image reference.")],
    python: PythonOpt = None,
    triton: TritonOpt = None,
    insecure_host: InsecureOpt = None,
    ca_cert: CaCertOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show an image's labels, targets, producer, parts and entries.

    Nothing is extracted: only the manifest, the config and the head of the layer are read.
    With --python or --triton, each entry says whether that runtime would hit it.

    Examples: tcm inspect oci:build/img:v1; tcm inspect docker://registry:5000/team/cache:v1
    --python /opt/venv/bin/python
    """
    info = ops.inspect(
        ref, registry=registry_options(insecure_host, ca_cert), python=python, triton=triton
    )
    if as_json:
        print_json(info.to_dict())
        return
    out.print(f"[bold]{esc(info.reference)}[/]")
    shown = ", ".join(f"{t.get('backend')}:{t.get('arch')}" for t in info.targets) or "-"
    out.print(
        f"  entries {info.entry_count}, cache size "
        f"{human_size(info.cache_size_bytes or 0)}, targets {esc(shown)}"
    )
    if info.producer:
        out.print(f"  producer {esc(json.dumps(info.producer))}")
    for k, v in sorted(info.labels.items()):
        out.print(f"  [dim]{esc(k)}[/] = {esc(v)}")
    for p in info.parts:
        roots = ", ".join(p.get("triton_roots") or []) or "none"
        out.print(
            f"  part {esc(p.get('kind'))}: {p.get('units')} units, {p.get('files')} files, "
            f"{human_size(int(p.get('bytes') or 0))}, from {esc(p.get('source'))} "
            f"(Triton roots: {esc(roots)})"
        )
    for name, g in sorted(info.gpus.items()):
        counts = ", ".join(
            f"{n} {kind} units" for kind, n in sorted(g.items()) if kind not in ("target", "triton")
        )
        out.print(
            f"  GPU {esc(name)} ({esc(g.get('target'))}): {esc(counts) or 'no units'}, "
            f"{g.get('triton', 0)} Triton entries compiled for it"
        )
    if info.runtime is not None:
        out.print(f"  runtime {esc(info.runtime)}")
    _print_helpers(info.helpers, judged=info.runtime is not None)
    rows = info.entries or []
    if rows:
        table = Table(box=None, header_style="bold", pad_edge=False)
        cols = ["KEY", "NAME", "TARGET", "TRITON", "PYTHON", "W/S", "SIZE"]
        for col in cols + (["FOR THIS RUNTIME"] if info.runtime is not None else []):
            table.add_column(col)
        for r in rows:
            cells = [
                esc(str(r.get("key") or r.get("hash", ""))[:12]),
                esc(r.get("name", "-")),
                esc(f"{r.get('backend')}:{r.get('arch')}"),
                esc(r.get("triton_version")),
                esc(r.get("python") or "-"),
                esc(f"{r.get('num_warps')}/{r.get('num_stages')}"),
                human_size(r["size"]) if isinstance(r.get("size"), int) else "-",
            ]
            if info.runtime is not None:
                cells.append("hit" if not r.get("skip") else esc(r["skip"]))
            table.add_row(*cells)
        out.print(table)


def _print_helpers(helpers: list[dict[str, Any]], *, judged: bool) -> None:
    """One line for Triton's C helpers: how many of each, for which Pythons; with a runtime,
    how many it would load."""
    if not helpers:
        return
    names = Counter(str(h.get("name")) for h in helpers)
    pythons = sorted({str(h.get("python")) for h in helpers if h.get("python")})
    line = ", ".join(f"{n} x{c}" for n, c in sorted(names.items()))
    line += f" (built for {', '.join(pythons) or 'unknown Python'})"
    if judged:
        skipped = [str(h["skip"]) for h in helpers if h.get("skip")]
        line += f"; this runtime loads {len(helpers) - len(skipped)}"
        if skipped:
            line += f", not {len(skipped)}: {skipped[0]}"
    out.print(f"  C helpers {esc(line)}")
