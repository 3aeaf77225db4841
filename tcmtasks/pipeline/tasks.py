"""doit task generators over the stages (``dodo.namespace`` calls ``make_tasks``).

Rules (docs/pipelines.md): stage manifests are the targets and file_deps (never the cache's
files); the warm stage's uptodate fingerprints its directory; ``config_changed`` holds the
stage's parameters plus a stage version; no lambdas (parallel runs pickle tasks); bad recipes
and unknown models raise doit's own errors (``ERROR:``, exit 3, no traceback); a stage that
fails with a tcm error fails its task with tcm's one-line message, not a traceback.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from doit.exceptions import InvalidCommand, InvalidDodoFile, TaskFailed
from doit.tools import config_changed

from ..errors import RecipeError, TcmError
from . import stages
from .recipe import Recipe, load_all

#: Bump a stage's version when its code changes what it produces.
VERSIONS = {"warm": 3, "index": 2, "dedup": 2, "prune": 2, "package": 2, "push": 3}

GetVar = Callable[[str, Any], Any]
TaskDict = dict[str, Any]


class WarmUnchanged:
    """uptodate: the warmed dir still has exactly the files the last warm left."""

    def __init__(self, directory: Path):
        self.directory = directory

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        saved = values.get("fingerprint")
        return saved is not None and saved == stages.fingerprint(self.directory)


def run_stage(stage: str, *args: Any) -> dict[str, Any] | TaskFailed | None:
    """Run one stage; a tcm error fails the task with its message (doit prints it as is)."""
    try:
        result: dict[str, Any] | None = getattr(stages, stage)(*args)
    except TcmError as exc:
        return TaskFailed(f"{stage}: {exc} [exit code {exc.exit_code}]")
    return result


def print_plan(lines: list[str]) -> None:
    print("\n".join(lines))


def _cfg(stage: str, params: Any) -> Any:
    return config_changed({"params": params, "version": VERSIONS[stage]})


def make_tasks(pipelines: Path, build: Path, get_var: GetVar) -> dict[str, Any]:
    """The task generators for the recipes in ``pipelines``; a bad recipe is doit's
    ``ERROR:`` with every problem listed, not a traceback."""
    try:
        return _make_tasks(load_all(pipelines), build, get_var)
    except RecipeError as exc:
        raise InvalidDodoFile(str(exc)) from None
    except TcmError as exc:
        raise InvalidDodoFile(f"{exc} [exit code {exc.exit_code}]") from None


def _make_tasks(recipes: dict[str, Recipe], build: Path, get_var: GetVar) -> dict[str, Any]:
    wanted = get_var("model", None)
    registry = get_var("registry", None)
    dest = f"docker://{registry}" if registry else None
    if wanted and wanted not in recipes:
        raise InvalidCommand(f"unknown model {wanted!r}; known: {', '.join(sorted(recipes))}")
    selected, left = ([wanted], {}) if wanted else runnable_here(recipes)
    if get_var("dry_run", None):
        return {"task_warm_and_ship": _dry_run(recipes, selected, dest, build, left)}

    def per_model(stage: str, doc: str, make: Callable[[Recipe], TaskDict]) -> Any:
        def creator() -> Iterator[TaskDict]:
            for model in sorted(recipes):
                task = make(recipes[model])
                yield {"name": model, "doc": f"{doc} ({model})", "verbosity": 2, **task}

        creator.__doc__ = doc
        creator.__name__ = f"task_{stage}"
        return creator

    def m(model: str, stage: str) -> str:
        return str(stages.manifest_path(model, stage, build))

    def task(r: Recipe, stage: str, params: Any, *extra: Any) -> TaskDict:
        i = stages.STAGES.index(stage)
        out: TaskDict = {
            "actions": [(run_stage, [stage, r, *extra, build])],
            "targets": [m(r.model, stage)],
            "uptodate": [_cfg(stage, params)],
        }
        if i > 0:
            out["file_dep"] = [m(r.model, stages.STAGES[i - 1])]
        return out

    def warm(r: Recipe) -> TaskDict:
        params = r.warm | {"targets": r.targets}
        profiles = stages.gpu_profile_paths(r)
        if profiles:  # a re-recorded profile is new input: warm again
            params["gpu_profiles_sha256"] = [_file_digest(p) for p in profiles]
        t = task(r, "warm", params)
        t["uptodate"].append(WarmUnchanged(stages.stage_dir(r.model, "warm", build)))
        return t

    def task_warm_and_ship() -> TaskDict:
        """Warm, index, dedup, prune, package and push (model=NAME for one; by default every
        model whose warm can run on this machine)."""
        note = [_left_note(left)] if left else []
        return {
            "actions": [(print_plan, [note])] if note else None,
            "task_dep": [f"push:{x}" for x in selected],
            "verbosity": 2,
        }

    return {
        "task_warm": per_model("warm", "warm the cache", warm),
        "task_index": per_model(
            "index", "index the warmed cache", lambda r: task(r, "index", None)
        ),
        "task_dedup": per_model(
            "dedup", "remove duplicate entries", lambda r: task(r, "dedup", r.dedup)
        ),
        "task_prune": per_model("prune", "prune IR files", lambda r: task(r, "prune", r.prune)),
        "task_package": per_model(
            "package",
            "package as an OCI image",
            lambda r: task(r, "package", [r.image_name, r.tag_template, r.compression]),
        ),
        "task_push": per_model(
            "push",
            "push the image to its destination",
            lambda r: task(r, "push", {"to": dest or r.destination, "sign": r.sign}, dest),
        ),
        "task_warm_and_ship": task_warm_and_ship,
    }


#: warm backends that compile on this machine's GPU (triton cross-compiles; command is the
#: user's own and may not need one)
GPU_BACKENDS = ("torch", "vllm")


def runnable_here(recipes: dict[str, Recipe]) -> tuple[list[str], dict[str, str]]:
    """The models a bare ``doit`` runs here, and those it leaves, each with why: a torch or
    vLLM warm needs a GPU, which this machine lacks, unless the recipe names GPU profiles
    and this machine has their runtime. A CPU-only machine ships what it can instead of
    stopping at the first model it cannot warm."""
    names = sorted(recipes)
    if not any(recipes[m].warm.get("backend") in GPU_BACKENDS for m in names):
        return names, {}
    from ..targets import host_targets

    if host_targets()[0]:
        return names, {}
    why = {m: _cannot_warm_here(recipes[m]) for m in names}
    left = {m: reason for m, reason in why.items() if reason}
    return [m for m in names if m not in left], left


def _cannot_warm_here(recipe: Recipe) -> str | None:
    """Why this GPU-less machine cannot warm ``recipe`` (None: it can)."""
    if recipe.warm.get("backend") not in GPU_BACKENDS:
        return None
    profiles = stages.gpu_profile_paths(recipe)
    if not profiles:
        return (
            "its warm compiles on a GPU, and this machine has none (on a GPU machine: "
            f"doit warm_and_ship model={recipe.model}; or name the GPUs with gpu_profiles:)"
        )
    from ..gpuprofile import fleet_mismatch, load, runtime_of

    python = recipe.warm.get("python")
    return fleet_mismatch([load(p) for p in profiles], runtime_of(python), python or "tcm's Python")


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise RecipeError(f"cannot read GPU profile {path}: {exc.strerror or exc}") from None


def _left_note(left: dict[str, str]) -> str:
    return "not run here: " + "; ".join(f"{m}: {reason}" for m, reason in left.items())


def _dry_run(
    recipes: dict[str, Recipe],
    selected: list[str],
    dest: str | None,
    build: Path,
    left: dict[str, str],
) -> Callable[[], TaskDict]:
    lines = [line for m in selected for line in stages.describe(recipes[m], dest, build)]
    lines += [_left_note(left)] if left else []

    def task_warm_and_ship() -> TaskDict:
        """What warm_and_ship would do (dry_run=1): nothing runs."""
        return {"actions": [(print_plan, [lines])], "uptodate": [False], "verbosity": 2}

    return task_warm_and_ship
