"""The pipeline's stages: warm -> index -> dedup -> prune -> package -> push, each a call of
the operation of the same name in ``tcmtasks.ops`` (so a stage and its CLI command cannot
drift apart), plus what makes it incremental.

Each stage reads the previous stage's directory, writes its own (``build/<model>/<stage>/``),
and writes a small deterministic manifest (``build/<model>/<stage>.json``): the next stage
depends on that file, never on the cache's thousands of files (docs/pipelines.md), and an
unchanged manifest stops the cascade. Dedup and prune work on hard-linked copies, so each
stage's input stays as it was and a changed parameter reruns from the right place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .. import ops
from ..atomic import atomic_write_text
from ..cache.entries import Entry
from ..cache.groups import group_filename, read_group, write_group
from ..errors import CacheError, GroupFormatError, UsageError
from ..oci.refs import ImageRef, parse
from ..oci.transfer import RegistryOptions
from ..resources import kernel_set, model_dir
from ..selection import Criteria
from ..targets import Target
from ..trust import SignOptions
from .recipe import Recipe

BUILD = Path("build")
STAGES = ("warm", "index", "dedup", "prune", "package", "push")


def stage_dir(model: str, stage: str, build: Path = BUILD) -> Path:
    return build / model / stage


def manifest_path(model: str, stage: str, build: Path = BUILD) -> Path:
    return build / model / f"{stage}.json"


def index_db(recipe: Recipe, build: Path) -> Path:
    return build / recipe.model / "index.db"


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


def gpu_profile_paths(recipe: Recipe) -> list[Path]:
    """The recipe's ``gpu_profiles:``: files relative to the recipe, or names of profiles
    tcm ships."""
    from ..gpuprofile import find

    return [find(spec, base=recipe.path.parent) for spec in recipe.warm.get("gpu_profiles", [])]


def warm_spec(recipe: Recipe) -> ops.WarmSpec:
    """The recipe's ``warm:`` section as the spec ``tcm warm`` would build from its flags."""
    w = recipe.warm
    backend = w["backend"]
    if backend == "triton":
        kernels = kernel_set(w["kernels"], base=recipe.path.parent)
        return ops.TritonWarm(
            kernels,
            [Target.parse(t) for t in recipe.targets],
            python=w.get("python"),
            libcuda_dirs=list(w.get("libcuda_dirs") or []),
        )
    if backend == "command":
        return ops.CommandWarm(
            list(w["command"]), inductor=w.get("inductor", False), vllm=w.get("vllm", False),
            gpu_profiles=list(gpu_profile_paths(recipe)),
        )  # fmt: skip
    if backend == "torch":
        return ops.TorchWarm(
            w["model"], w.get("batch", [1]), w.get("seq", [128]), w.get("dtype", ["fp16"]),
            w.get("python"), gpu_profiles=list(gpu_profile_paths(recipe)),
            dynamic=w.get("dynamic", False), any_order=w.get("any_order", False),
            mark_dynamic=list(w.get("mark_dynamic", [])),
        )  # fmt: skip
    return ops.VllmWarm(
        w["model"],
        image=w.get("image", ops.VllmWarm.image),
        engine=w.get("engine", "podman"),
        rocm=w.get("rocm", False),
        timeout=w.get("timeout", 3600.0),
    )


def warm(recipe: Recipe, build: Path = BUILD) -> dict[str, Any]:
    """Warm from scratch into build/<model>/warm (a rerun rebuilds it whole)."""
    out = stage_dir(recipe.model, "warm", build)
    shutil.rmtree(out, ignore_errors=True)
    result = ops.warm(warm_spec(recipe), out)
    if result.returncode:
        raise UsageError(f"the warm command of {recipe.path} exited with {result.returncode}")
    write_manifest(manifest_path(recipe.model, "warm", build), content_manifest(out))
    return {"fingerprint": fingerprint(out)}


def index(recipe: Recipe, build: Path = BUILD) -> None:
    src = stage_dir(recipe.model, "warm", build)
    db = index_db(recipe, build)
    ops.index([src], rescan=True, db=db)
    listed = ops.list_entries([src], criteria=Criteria(kinds=[]), refresh_index=False, db=db)
    base = src.resolve()
    rows = [
        [
            str(e.root.relative_to(base) if e.root.is_relative_to(base) else e.root),
            e.key,
            e.kind,
            e.name,
            str(e.target or ""),
            e.lookup,
            e.size,
        ]
        for e in listed.entries
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
        except (OSError, GroupFormatError):
            continue
        name = grp.name[len("__grp__") : -len(".json")]
        if grp.name != group_filename(name):
            continue
        fixed = {c: p.replace(src_abs, dst_abs, 1) for c, p in children.items()}
        write_group(grp.parent, name, fixed)


def dedup(recipe: Recipe, build: Path = BUILD) -> None:
    src, dst = stage_dir(recipe.model, "warm", build), stage_dir(recipe.model, "dedup", build)
    clone_tree(src, dst)
    removed: list[str] = []
    if recipe.dedup:
        # the copy is this stage's own: nothing else writes to it, so nothing is "recent"
        result = ops.dedup([dst], include_recent=True, db=index_db(recipe, build))
        _check(result, "dedup")
        removed = sorted(a.entry.key for a in result.plan.actions)
    write_manifest(
        manifest_path(recipe.model, "dedup", build),
        {"removed": removed, "files": content_manifest(dst)},
    )


def prune(recipe: Recipe, build: Path = BUILD) -> None:
    src, dst = stage_dir(recipe.model, "dedup", build), stage_dir(recipe.model, "prune", build)
    clone_tree(src, dst)
    p = recipe.prune
    ir, asm, source = p.get("ir", True), p.get("asm", False), p.get("source", False)
    if ir or asm or source:
        result = ops.prune(
            [dst], ir=ir, asm=asm, source=source, include_recent=True, db=index_db(recipe, build)
        )
        _check(result, "prune")
    write_manifest(manifest_path(recipe.model, "prune", build), content_manifest(dst))


def _check(result: ops.ChangeResult, stage: str) -> None:
    if result.applied is not None and result.applied.failed:
        action, message = result.applied.failed[0]
        raise CacheError(
            f"{stage} failed for {len(result.applied.failed)} entries, e.g. "
            f"{action.entry.key}: {message}"
        )


def image_tag(recipe: Recipe, entries: list[Entry]) -> str:
    versions = sorted({e.triton_version for e in entries if e.triton_version})
    targets = sorted({f"{e.target.backend}{e.target.arch}" for e in entries if e.target})
    tag = recipe.tag_template.format(
        model=recipe.model, triton="-".join(versions) or "x", targets="-".join(targets)
    )
    return tag.replace("+", "_")[:128]


def package(recipe: Recipe, build: Path = BUILD) -> None:
    src = stage_dir(recipe.model, "prune", build)
    db = index_db(recipe, build)
    listed = ops.list_entries([src], db=db)
    unhealthy = [e for e in listed.entries if e.lookup != "hit"]
    if unhealthy:
        e = unhealthy[0]
        raise CacheError(
            f"{len(unhealthy)} warmed entries would not hit, e.g. {e.path} ({e.lookup}): "
            "the pipeline ships whole caches only; run tcm doctor on it"
        )
    tag = image_tag(recipe, listed.entries)
    layout = build / "images" / recipe.image_name.replace("/", "_")
    result = ops.package(src, f"oci:{layout}:{tag}", compression=recipe.compression, db=db)
    write_manifest(
        manifest_path(recipe.model, "package", build),
        {
            "reference": f"oci:{layout}:{tag}",
            "digest": result.digest,
            "entries": len(result.entries),
            "tag": tag,
            "parts": {p.kind: len(p.files) for p in result.parts},
        },
    )


def destination_ref(
    recipe: Recipe, destination: str | None, tag: str
) -> tuple[ImageRef | str, bool]:
    """Where push sends the image ("" : nowhere), and whether that registry is insecure.

    A registry destination is ``docker://HOST[:PORT][/ORG...]``: HOST is a host whatever it
    looks like (``myhost`` too: a destination names a registry, so docker's rule that a
    dotless first component is a Docker Hub namespace does not apply), and the image's name
    goes under ORG."""
    dest = destination or recipe.destination
    if not dest:
        return "", False
    if dest.startswith("docker://"):
        host, _, org = dest[len("docker://") :].strip("/").partition("/")
        repo = f"{org}/{recipe.image_name}" if org else recipe.image_name
        try:
            ref = parse(f"docker://localhost/{repo}:{tag}")  # checks repo and tag as docker does
        except UsageError as exc:
            raise UsageError(f"destination {dest}: {exc}") from None
        return ImageRef("docker", host=host, repo=ref.repo, tag=ref.tag), recipe.insecure
    return f"{dest.rstrip('/')}:{tag}", False


def push(recipe: Recipe, destination: str | None, build: Path = BUILD) -> None:
    packaged = json.loads(manifest_path(recipe.model, "package", build).read_text())
    ref, insecure = destination_ref(recipe, destination, packaged["tag"])
    sign = sign_options(recipe)
    result: dict[str, Any]
    if not ref:
        result = {
            "destination": packaged["reference"],
            "digest": packaged["digest"],
            "copied": 0,
            "note": "no destination: the local OCI layout is the result"
            + ("; not signed (signatures go with a registry)" if sign else ""),
        }
    else:
        host = ref.host if isinstance(ref, ImageRef) else ""
        opts = RegistryOptions(insecure_hosts=[host] if insecure else [])
        remote = isinstance(ref, ImageRef) and ref.transport == "docker"
        r = ops.push(packaged["reference"], ref, registry=opts, sign=sign if remote else None)
        result = {"destination": str(ref), "digest": r.digest, "copied": r.copied}
        if r.pinned:
            result["pinned"] = r.pinned  # what nodes pull: this image, whatever the tag says
        if r.signatures:
            result["signatures"] = r.signatures
    write_manifest(manifest_path(recipe.model, "push", build), result)
    if result.get("pinned"):
        print(f"pin it: {result['pinned']}")


def sign_options(recipe: Recipe) -> SignOptions:
    s = recipe.sign
    base = recipe.path.parent

    def path(key: str) -> Path | None:
        return base / s[key] if s.get(key) else None  # relative to the recipe

    return SignOptions(s.get("by"), path("sigstore_private_key"), path("passphrase_file"),
                       path("registries_d"))  # fmt: skip


def describe(recipe: Recipe, destination: str | None, build: Path = BUILD) -> list[str]:
    """What a run of the recipe would do, stage by stage, without doing any of it."""
    spec = warm_spec(recipe)
    if isinstance(spec, ops.TorchWarm):
        spec.model = str(model_dir(spec.model))  # found now, or a clear error now
    ref, _insecure = destination_ref(recipe, destination, recipe.tag_template)
    layout = build / "images" / recipe.image_name.replace("/", "_")
    fields = ", ".join(
        f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in dataclasses.asdict(spec).items()
        if v not in (None, [], False)
    )
    return [
        f"{recipe.model} ({recipe.path})",
        f"  warm     {type(spec).__name__}({fields}) -> {stage_dir(recipe.model, 'warm', build)}",
        f"  index    -> {index_db(recipe, build)}",
        f"  dedup    {recipe.dedup} -> {stage_dir(recipe.model, 'dedup', build)}",
        f"  prune    {recipe.prune} -> {stage_dir(recipe.model, 'prune', build)}",
        f"  package  {recipe.compression}, tag {recipe.tag_template!r} -> oci:{layout}",
        f"  push     {ref or 'nowhere: the local layout is the result'}"
        + (f", signed ({', '.join(sorted(recipe.sign))})" if recipe.sign and ref else ""),
    ]
