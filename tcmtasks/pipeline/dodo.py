"""The pipeline's doit namespace, shipped in the package so an installed tcm runs it:
``python -m tcmtasks.pipeline warm_and_ship model=triton-tutorials`` anywhere, or
``doit warm_and_ship ...`` where a ``dodo.py`` calls ``namespace()`` (as the repo's does).

Recipes come from ``pipelines=DIR`` on the command line, else ``./pipelines/`` when the
current project has one, else the example recipes shipped with tcm. ``build=DIR`` moves the
build dir (default ``./build``); ``registry=HOST[:PORT][/ORG]`` pushes there; ``dry_run=1`` prints
what would run and runs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doit import get_var

from ..resources import builtin_recipes
from .tasks import GetVar, make_tasks


def recipes_dir(var: GetVar = get_var) -> Path:
    given = var("pipelines", None)
    if given:
        return Path(given)
    local = Path("pipelines")
    return local if local.is_dir() else builtin_recipes()


def namespace(var: GetVar = get_var) -> dict[str, Any]:
    """DOIT_CONFIG and the task generators, read when doit loads tasks (after its
    command-line variables are set)."""
    build = Path(var("build", "build"))
    build.mkdir(parents=True, exist_ok=True)
    config = {
        "backend": "sqlite3",  # the default dbm falls back to the slow dbm.dumb
        "dep_file": str(build / ".doit.db"),
        "default_tasks": ["warm_and_ship"],
        "verbosity": 2,
    }
    return {"DOIT_CONFIG": config, **make_tasks(recipes_dir(var), build, var)}
