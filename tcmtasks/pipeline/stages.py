"""The pipeline's stages as plain functions: warm -> index -> dedup -> prune -> package -> push.

Each stage reads the previous stage's directory, writes its own (``build/<model>/<stage>/``),
and writes a small deterministic manifest (``build/<model>/<stage>.json``): the next stage
depends on that file, never on the cache's thousands of files (FACTS.md item 18), and an
unchanged manifest stops the cascade. Dedup and prune work on hard-linked copies, so each
stage's input stays as it was and a changed parameter reruns from the right place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..cache.entries import EntryKind, scan_root
from ..cache.groups import group_filename, read_group, write_group
from ..cache.roots import discover
from ..index import Index
from ..prune import apply, plan_dedup, plan_ir
from .recipe import Recipe

BUILD = Path("build")


def stage_dir(model: str, stage: str, build: Path = BUILD) -> Path:
    return build / model / stage


def manifest_path(model: str, stage: str, build: Path = BUILD) -> Path:
    return build / model / f"{stage}.json"


def write_manifest(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def fingerprint(directory: Path) -> list[list[Any]]:
    """(relpath, size, mtime_ns) of every file: cheap, and any edit or deletion shows."""
    out = []
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            p = Path(dirpath) / name
            try:
                st = p.stat()
            except OSError:
                continue
            out.append([str(p.relative_to(directory)), st.st_size, st.st_mtime_ns])
    return sorted(out)


def content_manifest(directory: Path) -> list[list[Any]]:
    """(relpath, size) of every file: the same content rebuilt gives the same manifest."""
    return [
        [rel, size]
        for rel, size, _mtime in fingerprint(directory)
        if not Path(rel).name.startswith(".tcm")
    ]


def warm(recipe: Recipe, build: Path = BUILD) -> dict[str, Any]:
    """Warm from scratch into build/<model>/warm (a rerun rebuilds it whole)."""
    from ..producer import detect, write_record
    from ..targets import Target

    out = stage_dir(recipe.model, "warm", build)
    shutil.rmtree(out, ignore_errors=True)
    w = recipe.warm
    backend = w["backend"]
    if backend == "triton":
        from ..warm.triton_backend import compile_kernelset

        compile_kernelset(w["kernels"], [Target.parse(t) for t in recipe.targets], out)
    elif backend == "command":
        from ..warm.command_backend import run_command

        r = run_command(w["command"], out, inductor=w.get("inductor", False))
        if r["returncode"]:
            raise RuntimeError(f"warm command exited with {r['returncode']}")
    elif backend == "torch":
        from ..warm.torch_backend import warm_model

        warm_model(
            w["model"], out, w.get("batch", [1]), w.get("seq", [128]), w.get("dtype", ["fp16"])
        )
    else:
        from ..warm.vllm_backend import VllmWarm, run_vllm

        run_vllm(
            VllmWarm(
                model=w["model"],
                output=out,
                image=w.get("image", VllmWarm.image),
                engine=w.get("engine", "podman"),
                rocm=w.get("rocm", False),
                timeout=w.get("timeout", 3600.0),
            )
        )
    write_record(out, detect(), backend=backend)
    write_manifest(manifest_path(recipe.model, "warm", build), content_manifest(out))
    return {"fingerprint": fingerprint(out)}


def index(recipe: Recipe, build: Path = BUILD) -> None:
    src = stage_dir(recipe.model, "warm", build)
    with Index(build / recipe.model / "index.db") as idx:
        roots = discover([src])
        idx.update(roots, rescan=True)
        rows = [
            [
                str(
                    e.root.relative_to(src.resolve())
                    if e.root.is_relative_to(src.resolve())
                    else e.root
                ),
                e.key,
                e.kind,
                e.name,
                str(e.target or ""),
                e.lookup,
                e.size,
            ]
            for e in idx.entries([r.path for r in roots])
        ]
    write_manifest(manifest_path(recipe.model, "index", build), sorted(rows))


def clone_tree(src: Path, dst: Path) -> None:
    """Hard-link copy of a cache tree, groups rewritten to point at the copy (a new file, so
    the source's groups are untouched)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, copy_function=os.link)
    src_abs, dst_abs = str(src.resolve()), str(dst.resolve())
    for grp in dst.rglob("__grp__*.json"):
        try:
            children = read_group(grp)
        except (OSError, ValueError):
            continue
        name = grp.name[len("__grp__") : -len(".json")]
        if grp.name != group_filename(name):
            continue
        fixed = {c: p.replace(src_abs, dst_abs, 1) for c, p in children.items()}
        write_group(grp.parent, name, fixed)


def _kernels(directory: Path) -> list:
    return [
        e for r in discover([directory]) for e in scan_root(r.path) if e.kind == EntryKind.KERNEL
    ]


def dedup(recipe: Recipe, build: Path = BUILD) -> None:
    src, dst = stage_dir(recipe.model, "warm", build), stage_dir(recipe.model, "dedup", build)
    clone_tree(src, dst)
    removed = []
    if recipe.dedup:
        with Index(build / recipe.model / "index.db") as idx:
            idx.update(discover([dst]), rescan=True)
            entries = idx.entries([r.path for r in discover([dst])], with_metadata=True)
        plan = plan_dedup([e for e in entries if e.kind == EntryKind.KERNEL], now=float("inf"))
        apply(plan)
        removed = sorted(a.entry.key for a in plan.actions)
    write_manifest(
        manifest_path(recipe.model, "dedup", build),
        {"removed": removed, "files": content_manifest(dst)},
    )


def prune(recipe: Recipe, build: Path = BUILD) -> None:
    src, dst = stage_dir(recipe.model, "dedup", build), stage_dir(recipe.model, "prune", build)
    clone_tree(src, dst)
    p = recipe.prune
    if p.get("ir", True) or p.get("asm") or p.get("source"):
        entries = _kernels(dst)
        plan = plan_ir(entries, asm=p.get("asm", False), source=p.get("source", False))
        if not p.get("ir", True):  # asm/source only
            for a in plan.actions:
                a.files = tuple(f for f in a.files if not f.endswith((".ttir", ".ttgir", ".llir")))
        result = apply(plan)
        if result.failed:
            raise RuntimeError(
                f"prune failed for {len(result.failed)} entries: {result.failed[0][1]}"
            )
    write_manifest(manifest_path(recipe.model, "prune", build), content_manifest(dst))


def image_tag(recipe: Recipe, entries: list) -> str:
    versions = sorted({e.triton_version for e in entries if e.triton_version})
    targets = sorted({f"{e.target.backend}{e.target.arch}" for e in entries if e.target})
    tag = recipe.tag_template.format(
        model=recipe.model, triton="-".join(versions) or "x", targets="-".join(targets)
    )
    return tag.replace("+", "_")[:128]


def package(recipe: Recipe, build: Path = BUILD) -> None:
    from ..oci.image import MT_MANIFEST
    from ..oci.image import package as build_image
    from ..oci.layout import OciLayout

    src = stage_dir(recipe.model, "prune", build)
    entries = [e for e in _kernels(src) if e.lookup == "hit"]
    for r in discover([src]):
        for e in scan_root(r.path):
            if e.kind == EntryKind.KERNEL and e.metadata is None:
                raise RuntimeError(f"{e.path}: unreadable metadata")
    tag = image_tag(recipe, entries)
    layout = build / "images" / recipe.image_name.replace("/", "_")
    store = OciLayout(layout, tag, create=True)
    record = stage_dir(recipe.model, "warm", build) / ".tcm-producer.json"
    producer = json.loads(record.read_text()) if record.is_file() else None
    built = build_image(entries, store, compression=recipe.compression, producer=producer)
    store.put_manifest(built.manifest, MT_MANIFEST)
    write_manifest(
        manifest_path(recipe.model, "package", build),
        {
            "reference": f"oci:{layout}:{tag}",
            "digest": built.digest,
            "entries": len(entries),
            "tag": tag,
        },
    )


def push(recipe: Recipe, destination: str | None, build: Path = BUILD) -> None:
    from ..oci.transfer import RegistryOptions, copy_image, open_dest, open_source

    packaged = json.loads(manifest_path(recipe.model, "package", build).read_text())
    dest = destination or recipe.destination
    if not dest:
        result = {
            "destination": packaged["reference"],
            "digest": packaged["digest"],
            "copied": 0,
            "note": "no destination: the local OCI layout is the result",
        }
    else:
        if dest.startswith("docker://"):
            host = dest[len("docker://") :].split("/", 1)[0]
            ref = f"docker://{host}/{recipe.image_name}:{packaged['tag']}"
            opts = RegistryOptions(insecure_hosts=[host] if recipe.insecure else [])
        else:
            ref, opts = f"{dest.rstrip('/')}:{packaged['tag']}", RegistryOptions()
        r = copy_image(open_source(packaged["reference"]), open_dest(ref, opts))
        result = {"destination": ref, "digest": r.digest, "copied": r.copied}
    write_manifest(manifest_path(recipe.model, "push", build), result)
