"""A fleet warm's output: one compile cache per GPU, and a record of which GPU each serves.

Inductor's FX-graph and AOTAutograd keys hash the GPU's name (docs/gpu-less-warm.md, "What a
key depends on"), so each GPU of a fleet needs graphs of its own, while most of the rest (the
generated code, Triton's kernels for one arch) is the same bytes for every GPU of that arch.
A warm for several GPUs therefore writes each GPU's cache into a dir of its own, exactly what
that GPU's process would write, and ``.tcm-fleet.json`` beside them names them. Every command
that takes a cache dir reads a fleet dir as its members' caches (``members``); packaging merges
the members into one image whose rows say which GPUs each unit serves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_write_text
from .errors import CacheError

if TYPE_CHECKING:
    from .gpuprofile import GpuProfile

FLEET_FILE = ".tcm-fleet.json"
FORMAT = 1


@dataclass(frozen=True)
class Member:
    """One GPU's cache in a fleet dir."""

    dir: str  # a plain name under the fleet dir
    gpu: str  # the device's name, as Inductor's key holds it ("NVIDIA H200")
    target: str  # Triton's target ("cuda:90")
    how: str  # "gpu-less" (compiled from its profile) or "native" (on that GPU)
    profile: str  # the profile it was compiled from


def member(profile: GpuProfile, how: str, spec: str | Path) -> Member:
    """The member a warm for ``profile`` (named by ``spec``) wrote into ``profile.slug``."""
    return Member(profile.slug, profile.name, str(profile.triton_target), how, str(spec))


def write(out: Path, members: list[Member]) -> None:
    data = {"format": FORMAT, "members": [asdict(m) for m in members]}
    atomic_write_text(out / FLEET_FILE, json.dumps(data, indent=1, sort_keys=True) + "\n")


def read(path: Path) -> list[Member] | None:
    """The members of the fleet dir ``path``; None when it is not one."""
    marker = Path(path) / FLEET_FILE
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        members = [Member(**{k: str(m[k]) for k in Member.__dataclass_fields__})
                   for m in data["members"]]  # fmt: skip
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError) as exc:
        raise CacheError(
            f"{marker} is not a fleet record tcm wrote ({exc}); warm the fleet again"
        ) from None
    for m in members:
        if not m.dir or "/" in m.dir or m.dir in (".", ".."):
            raise CacheError(f"{marker} names {m.dir!r}, not a dir of its own: warm again")
    return members


def member_dirs(path: Path) -> list[Path]:
    """The caches a dir stands for: a fleet dir's members, else the dir itself."""
    members = read(path)
    return [Path(path) / m.dir for m in members] if members else [Path(path)]
