"""Files that ship inside the package: the recipe schema, the example recipes, model configs
and kernel sets. Found through ``importlib.resources`` so a plain ``pip install tcmtasks``
(not only a checkout) runs the pipeline and every command.

tcm is installed unpacked (a wheel in site-packages, or an editable checkout), so the data is
on the file system and callers get ordinary paths.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from .errors import UsageError


def data_dir() -> Path:
    return Path(str(importlib.resources.files("tcmtasks") / "data"))


def recipe_schema() -> Path:
    return data_dir() / "recipe.schema.json"


def builtin_recipes() -> Path:
    return data_dir() / "pipelines"


def builtin_models() -> dict[str, Path]:
    """Model configs shipped with tcm: name -> dir holding ``config.json``."""
    root = data_dir() / "models"
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").is_file()}


def builtin_kernel_sets() -> dict[str, Path]:
    """Kernel sets shipped with tcm: name -> module file."""
    root = data_dir() / "kernels"
    return {p.stem: p for p in sorted(root.glob("*.py")) if not p.name.startswith("_")}


def model_dir(model: str) -> Path:
    """A dir with ``config.json`` given as a path, or the name of a shipped model config."""
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return path
    known = builtin_models()
    if model in known:
        return known[model]
    raise UsageError(
        f"no model {model!r}: give a dir with config.json or one of: {', '.join(known)}"
    )


def kernel_set(spec: str, *, base: Path | None = None) -> str:
    """Resolve a kernel-set spec to what ``kernelset.load`` imports: an existing file (as
    given, or relative to ``base``, a recipe's dir), the name of a shipped set, else a
    module name left for import."""
    for candidate in (Path(spec), *([base / spec] if base is not None else [])):
        if candidate.is_file():
            return str(candidate.resolve())
    known = builtin_kernel_sets()
    if spec in known:
        return str(known[spec])
    if spec.endswith(".py") or "/" in spec:
        raise UsageError(
            f"kernel set {spec} does not exist; give a file, a module, or one of: "
            f"{', '.join(known)}"
        )
    return spec
