"""doit task generators over the stages (dodo.py only calls ``make_tasks``).

Rules from FACTS.md items 18-19: stage manifests are the targets and file_deps (never the
cache's files); the warm stage's uptodate fingerprints its directory; ``config_changed`` holds
the stage's parameters plus a stage version; no lambdas (parallel runs pickle tasks); bad
recipes and unknown models raise doit's own errors (``ERROR:``, exit 3, no traceback).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doit.exceptions import InvalidCommand, InvalidDodoFile
from doit.tools import config_changed

from . import stages
from .recipe import Recipe, RecipeError, load_all

#: Bump a stage's version when its code changes what it produces.
VERSIONS = {"warm": 1, "index": 1, "dedup": 1, "prune": 1, "package": 1, "push": 1}


class WarmUnchanged:
    """uptodate: the warmed dir still has exactly the files the last warm left."""

    def __init__(self, directory: Path):
        self.directory = directory

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        saved = values.get("fingerprint")
        return saved is not None and saved == stages.fingerprint(self.directory)


def _cfg(stage: str, params: Any) -> Any:
    return config_changed({"params": params, "version": VERSIONS[stage]})


def make_tasks(pipelines: Path, build: Path, get_var: Any) -> dict[str, Any]:
    try:
        recipes = load_all(pipelines)
    except RecipeError as exc:
        raise InvalidDodoFile(str(exc)) from None
    wanted = get_var("model", None)
    registry = get_var("registry", None)
    if wanted and wanted not in recipes:
        raise InvalidCommand(f"unknown model {wanted!r}; known: {', '.join(sorted(recipes))}")
    selected = [wanted] if wanted else sorted(recipes)

    def per_model(stage: str, doc: str, make) -> Any:
        def creator():
            for model in sorted(recipes):
                task = make(recipes[model])
                yield {"name": model, "doc": f"{doc} ({model})", "verbosity": 2, **task}

        creator.__doc__ = doc
        creator.__name__ = f"task_{stage}"
        return creator

    def m(model: str, stage: str) -> str:
        return str(stages.manifest_path(model, stage, build))

    def warm(r: Recipe) -> dict:
        return {
            "actions": [(stages.warm, [r, build])],
            "targets": [m(r.model, "warm")],
            "uptodate": [
                _cfg("warm", r.warm | {"targets": r.targets}),
                WarmUnchanged(stages.stage_dir(r.model, "warm", build)),
            ],
        }

    def index(r: Recipe) -> dict:
        return {
            "actions": [(stages.index, [r, build])],
            "file_dep": [m(r.model, "warm")],
            "targets": [m(r.model, "index")],
            "uptodate": [_cfg("index", None)],
        }

    def dedup(r: Recipe) -> dict:
        return {
            "actions": [(stages.dedup, [r, build])],
            "file_dep": [m(r.model, "index")],
            "targets": [m(r.model, "dedup")],
            "uptodate": [_cfg("dedup", r.dedup)],
        }

    def prune(r: Recipe) -> dict:
        return {
            "actions": [(stages.prune, [r, build])],
            "file_dep": [m(r.model, "dedup")],
            "targets": [m(r.model, "prune")],
            "uptodate": [_cfg("prune", r.prune)],
        }

    def package(r: Recipe) -> dict:
        return {
            "actions": [(stages.package, [r, build])],
            "file_dep": [m(r.model, "prune")],
            "targets": [m(r.model, "package")],
            "uptodate": [_cfg("package", [r.image_name, r.tag_template, r.compression])],
        }

    def push(r: Recipe) -> dict:
        dest = registry and f"docker://{registry}"
        return {
            "actions": [(stages.push, [r, dest, build])],
            "file_dep": [m(r.model, "package")],
            "targets": [m(r.model, "push")],
            "uptodate": [_cfg("push", dest or r.destination)],
        }

    def task_warm_and_ship():
        """Warm, index, dedup, prune, package and push (model=NAME for one; all by default)."""
        return {"actions": None, "task_dep": [f"push:{x}" for x in selected]}

    return {
        "task_warm": per_model("warm", "warm the cache", warm),
        "task_index": per_model("index", "index the warmed cache", index),
        "task_dedup": per_model("dedup", "remove duplicate entries", dedup),
        "task_prune": per_model("prune", "prune IR files", prune),
        "task_package": per_model("package", "package as an OCI image", package),
        "task_push": per_model("push", "push the image to its destination", push),
        "task_warm_and_ship": task_warm_and_ship,
    }
