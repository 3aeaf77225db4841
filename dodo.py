"""doit pipelines: `doit warm_and_ship model=triton-tutorials` (every model without model=).

Thin by design: recipes live in pipelines/*.yaml (schemas/recipe.schema.json), the stages and
task rules in tcmtasks/pipeline/. `doit list` shows every task; `registry=HOST[:PORT]` pushes
to a registry instead of the local OCI layout under build/images.
"""

from pathlib import Path

from doit import get_var

from tcmtasks.pipeline.tasks import make_tasks

ROOT = Path(__file__).resolve().parent
BUILD = Path("build")
BUILD.mkdir(exist_ok=True)

DOIT_CONFIG = {
    "backend": "sqlite3",  # the default dbm falls back to the slow dbm.dumb (FACTS.md 19)
    "dep_file": str(BUILD / ".doit.db"),
    "default_tasks": ["warm_and_ship"],
    "verbosity": 2,
}

globals().update(make_tasks(ROOT / "pipelines", BUILD, get_var))
