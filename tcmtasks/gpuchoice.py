"""Whose units of an image made for several GPUs a node installs (the fleet's restore side;
tcmtasks/fleet.py is its warm side). Inductor's and vLLM's keys hold the GPU's name, so a
unit made for another GPU would only miss: the image's ``io.tcm.gpus`` label names the GPUs it
serves, each part's ``gpus`` row which units each needs, and the node picks its own GPU's (or
those the user names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import IncompatibleImage, UsageError
from .oci.image import LABEL_GPUS
from .oci.inspect import json_label
from .targets import Target


@dataclass(frozen=True)
class GpuChoice:
    """Whose Inductor and vLLM units a node installs from an image made for several GPUs
    (their keys hold the GPU's name, so another GPU's units would only miss)."""

    names: tuple[str, ...]  # device names ("NVIDIA H200")
    #: named by the user (--gpu): matched loosely against the image's GPUs, and the entries
    #: kept are those of their targets unless targets are given
    named: bool = False


def served_gpus(labels: dict[str, str]) -> dict[str, str]:
    """The GPUs an image's units were made for (its ``io.tcm.gpus`` label): name -> target."""
    found = json_label(labels.get(LABEL_GPUS))
    if not isinstance(found, dict):
        return {}
    return {
        str(name): str(row.get("target") or "")
        for name, row in found.items()
        if isinstance(row, dict)
    }


def match_gpu(name: str, served: dict[str, str]) -> str:
    """The GPU of ``served`` that ``--gpu NAME`` means: its device name in any case, its
    name as a dir name (``nvidia-h200``), or the start of one (``nvidia-h100`` for
    ``NVIDIA H100 80GB HBM3``) when only one GPU starts so."""
    from .gpuprofile import slug

    wanted = slug(name)
    exact = [g for g in served if g.lower() == name.strip().lower() or slug(g) == wanted]
    if exact:
        return exact[0]
    starts = [g for g in served if slug(g).startswith(wanted + "-")]
    if len(starts) == 1:
        return starts[0]
    which = f"matches {' and '.join(starts)}" if starts else "is none of its GPUs"
    raise IncompatibleImage(f"--gpu {name} {which}; the image serves {_served_text(served)}")


def _served_text(served: dict[str, str]) -> str:
    return ", ".join(f"{g} ({t})" if t else g for g, t in sorted(served.items()))


def choose_gpus(
    image: str, served: dict[str, str], choice: GpuChoice | None, targets: list[Target] | None
) -> tuple[list[str] | None, list[Target] | None]:
    """(whose units to install, the entries' targets) for a fleet image; unchanged for an
    image whose units serve any GPU."""
    if not served:
        if choice is not None and choice.named:
            raise UsageError(
                f"{image} does not say which GPUs its units serve (--gpu chooses "
                "among the GPUs of an image warmed for a fleet): use --target or --all"
            )
        return None, targets
    if choice is None:
        return None, targets
    if choice.named:
        gpus = list(dict.fromkeys(match_gpu(n, served) for n in choice.names))
        if targets is None:
            targets = sorted({Target.parse(served[g]) for g in gpus if served[g]})
        return gpus, targets
    if not choice.names:
        raise UsageError(
            f"this host has no GPU tcm can name (nvidia-ml-py, amdsmi), and "
            f"{image} holds units for {_served_text(served)}: choose whose with "
            "--gpu NAME, or --all for every GPU's"
        )
    gpus = [g for g in choice.names if g in served]
    if not gpus:
        raise IncompatibleImage(
            f"{image} serves {_served_text(served)}; this node's GPU is "
            f"{', '.join(choice.names)}: nothing to install (its keys hold the GPU's name; "
            "warm for this GPU with its profile, or --gpu NAME installs another GPU's units)"
        )
    return gpus, targets


def owners(gpus: Any) -> dict[str, frozenset[str]]:
    """unit -> the GPUs that need it, from a part row's ``gpus`` (GPU -> its units)."""
    found: dict[str, set[str]] = {}
    if isinstance(gpus, dict):
        for gpu, units in gpus.items():
            for unit in units if isinstance(units, list) else []:
                found.setdefault(str(unit), set()).add(str(gpu))
    return {u: frozenset(g) for u, g in found.items()}
