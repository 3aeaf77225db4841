"""Recipes: one YAML file per model, validated against the JSON Schema shipped with tcm
(``tcmtasks/data/recipe.schema.json``).

Every schema error is reported at once, each with ``file:line:column`` and its YAML path, so a
recipe is fixed in one pass rather than one complaint at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RecipeError
from ..resources import recipe_schema

TAG_FIELDS = {"model": "m", "triton": "3.6.0", "targets": "cuda90"}


@dataclass
class Recipe:
    path: Path
    model: str
    warm: dict[str, Any]
    image_name: str
    tag_template: str = "{model}"
    targets: list[str] = field(default_factory=list)
    dedup: bool = True
    prune: dict[str, bool] = field(default_factory=lambda: {"ir": True})
    compression: str = "gzip"
    destination: str | None = None
    insecure: bool = False
    sign: dict[str, str] = field(default_factory=dict)  # the schema's sign: by, sigstore_...

    def params(self) -> dict[str, Any]:
        """Everything that decides the output, for doit's config_changed."""
        return {
            "warm": self.warm,
            "targets": self.targets,
            "dedup": self.dedup,
            "prune": self.prune,
            "image": self.image_name,
            "tag": self.tag_template,
            "compression": self.compression,
        }


def _position(root: Any, path: list[Any]) -> tuple[int, int]:
    """Line and column (1-based) of the YAML node at ``path`` (or its nearest parent)."""
    node = root
    for part in path:
        nxt = None
        if hasattr(node, "value") and isinstance(node.value, list):
            if (
                isinstance(part, int)
                and part < len(node.value)
                and not isinstance(node.value[0], tuple)
            ):
                nxt = node.value[part]
            else:
                for k, v in node.value:
                    if isinstance(k.value, str) and k.value == part:
                        nxt = v
                        break
        if nxt is None:
            break
        node = nxt
    return node.start_mark.line + 1, node.start_mark.column + 1


def _yaml_path(path: list[Any]) -> str:
    out = "$"
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def load_recipe(path: Path, schema_path: Path | None = None) -> Recipe:
    import jsonschema
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise RecipeError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    schema = json.loads((schema_path or recipe_schema()).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for e in errors:
            p = list(e.absolute_path)
            line, col = _position(root, p) if root is not None else (1, 1)
            lines.append(f"{path}:{line}:{col}: {_yaml_path(p)}: {e.message}")
        raise RecipeError(f"{len(errors)} error(s) in recipe {path.name}:\n" + "\n".join(lines))
    if data["model"] != path.stem:
        raise RecipeError(
            f"{path}: model {data['model']!r} must match the file name ({path.stem}.yaml)"
        )
    image = data["image"]
    _check_tag(path, image.get("tag", "{model}"))
    return Recipe(
        path=path,
        model=data["model"],
        warm=data["warm"],
        image_name=image["name"],
        tag_template=image.get("tag", "{model}"),
        targets=data.get("targets", []),
        dedup=data.get("dedup", True),
        prune={"ir": True, **data.get("prune", {})},
        compression=image.get("compression", "gzip"),
        destination=data.get("destination"),
        insecure=data.get("insecure", False),
        sign=data.get("sign", {}),
    )


def _check_tag(path: Path, template: str) -> None:
    """A tag template names only fields the package stage fills in: found now, not after
    four stages have run."""
    try:
        template.format(**TAG_FIELDS)
    except (KeyError, IndexError, ValueError) as exc:
        raise RecipeError(
            f"{path}: image.tag {template!r} is not a valid template ({exc.__class__.__name__}: "
            f"{exc}); it may use {', '.join('{' + f + '}' for f in TAG_FIELDS)}"
        ) from None


def load_all(directory: Path) -> dict[str, Recipe]:
    """Every recipe in ``directory``; all their errors together in one RecipeError."""
    recipes, problems = {}, []
    for path in sorted(Path(directory).glob("*.yaml")):
        try:
            r = load_recipe(path)
            recipes[r.model] = r
        except RecipeError as exc:
            problems.append(str(exc))
    if problems:
        raise RecipeError("\n".join(problems))
    return recipes
