"""The records of a restore: where each part of an image goes on a node, what is planned for
each part, and the report the user reads (``tcm pull --json`` prints it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache.entries import Entry
from .oci.image import Dest

TRITON: Dest = ("triton", "")


@dataclass
class Destinations:
    """Where each part of an image goes on this node."""

    triton: Path  # plain Triton entries: TRITON_CACHE_DIR, else ~/.triton/cache
    inductor: Path  # the workload's TORCHINDUCTOR_CACHE_DIR
    vllm: Path  # the workload's VLLM_CACHE_ROOT
    #: The workload sets TRITON_CACHE_DIR: Inductor then sends Triton there, not to its own dir.
    triton_env: bool = False

    def kind_root(self, kind: str) -> Path:
        return {"triton": self.triton, "inductor": self.inductor, "vllm": self.vllm}[kind]

    def root_for(self, dest: Dest) -> Path:
        named, rel = self.split(dest)
        return named / rel if rel else named

    def split(self, dest: Dest) -> tuple[Path, str]:
        """(the dir the user named or the workload's default, the Triton root below it)."""
        kind, rel = dest
        if kind == "triton" or (kind == "inductor" and self.triton_env):
            return self.triton, ""
        return self.kind_root(kind), rel


@dataclass
class PartPlan:
    kind: str
    prefix: str
    source: str  # the producer's absolute dir
    mount: str
    dest: Path  # where its files go here
    skipped: str | None = None
    installed: int = 0  # units
    existing: int = 0  # units kept as they were
    failed: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    #: unit -> the GPUs that need it, from the manifest (empty: the part serves any GPU)
    owners: dict[str, frozenset[str]] = field(default_factory=dict)
    #: the GPUs whose units this node installs (None: every GPU's)
    keep_gpus: frozenset[str] | None = None
    #: GPU -> its units left out here, because no GPU this node installs for needs them
    other_gpus: dict[str, set[str]] = field(default_factory=dict)

    def wants(self, unit: str) -> bool:
        """Whether this node installs ``unit``; one it leaves is counted for its GPUs."""
        owners = self.owners.get(unit)
        if not owners or self.keep_gpus is None or owners & self.keep_gpus:
            return True
        for gpu in owners:
            self.other_gpus.setdefault(gpu, set()).add(unit)
        return False

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "dest": str(self.dest), "source": self.source,
            "skipped": self.skipped, "units": self.installed, "existing": self.existing,
            "failed": self.failed, "files": self.files, "bytes": self.bytes,
            "other_gpus": {g: len(u) for g, u in sorted(self.other_gpus.items())},
        }  # fmt: skip


@dataclass
class RestoreReport:
    reference: str
    cache_dir: str
    host_targets: list[str]
    image_targets: list[str]
    producer_warnings: list[str] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # selected, but not installed
    bytes: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    parts: list[PartPlan] = field(default_factory=list)
    runtime: dict[str, Any] = field(default_factory=dict)  # what entries were selected for
    image_gpus: list[str] = field(default_factory=list)  # the GPUs a fleet image serves
    gpus: list[str] | None = None  # whose units were installed (None: every GPU's)
    verified: list[str] = field(default_factory=list)  # the policy requirements it met
    served_by: str = ""  # the registries.conf mirror that served it ("": the reference's own)
    #: the Triton entries installed, as judged at their place (for the index, not the report)
    arrived: list[Entry] = field(default_factory=list, repr=False)
    #: False where the extract held too much to keep them all: the index reads the dirs
    arrived_complete: bool = field(default=True, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out.pop("arrived")
        out.pop("arrived_complete")
        out["parts"] = [p.to_dict() for p in self.parts]
        return out

    def skip_reasons(self) -> list[tuple[str, int]]:
        """Each distinct reason entries were skipped for, with how many, most first."""
        counts: dict[str, int] = {}
        for item in self.skipped:
            counts[str(item.get("reason"))] = counts.get(str(item.get("reason")), 0) + 1
        return sorted(counts.items(), key=lambda kv: -kv[1])
