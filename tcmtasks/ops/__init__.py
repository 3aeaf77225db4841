"""tcm's operations: every ``tcm`` command and pipeline stage is one of these functions.

Each takes typed parameters, validates them (raising ``UsageError``), takes the lock of every
cache root it changes, reports progress through an optional ``progress`` callback, and
returns a typed result with ``to_dict()`` (what ``--json`` prints). Errors are the
``tcmtasks.errors`` tree, each with its exit code.

    from tcmtasks import ops

    built = ops.package(Path("~/.triton/cache").expanduser(), "oci:build/img:v1")
    ops.push("oci:build/img:v1", "docker://registry.example.com/team/cache:v1")
    report = ops.pull("docker://registry.example.com/team/cache:v1")  # on the node
"""

from __future__ import annotations

from ..extract import RestoreReport
from ..oci.inspect import ImageInfo
from ..oci.transfer import RegistryOptions
from ..progress import Progress, ProgressEvent
from ..prune import Plan
from ..selection import Criteria
from ..warm.vllm_backend import VllmWarm
from .maintain import (
    ChangeResult,
    Confirm,
    DoctorResult,
    IndexResult,
    ListResult,
    dedup,
    doctor,
    gc,
    index,
    list_entries,
    prune,
    show,
)
from .restore import HostInfo, default_cache_dir, extract, gpu, pull
from .ship import PackageResult, PushResult, inspect, package, push
from .tracking import TrackResult, track
from .warming import CommandWarm, TorchWarm, TritonWarm, WarmResult, WarmSpec, warm

__all__ = [
    "ChangeResult",
    "CommandWarm",
    "Confirm",
    "Criteria",
    "DoctorResult",
    "HostInfo",
    "ImageInfo",
    "IndexResult",
    "ListResult",
    "PackageResult",
    "Plan",
    "Progress",
    "ProgressEvent",
    "PushResult",
    "RegistryOptions",
    "RestoreReport",
    "TorchWarm",
    "TrackResult",
    "TritonWarm",
    "VllmWarm",
    "WarmResult",
    "WarmSpec",
    "dedup",
    "default_cache_dir",
    "doctor",
    "extract",
    "gc",
    "gpu",
    "index",
    "inspect",
    "list_entries",
    "package",
    "prune",
    "pull",
    "push",
    "show",
    "track",
    "warm",
]
