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

import importlib
from typing import TYPE_CHECKING, Any

# Loaded on first use (PEP 562), as in tcmtasks/__init__.py: ``tcm list`` needs maintain.py,
# not the extract/registry/warm stack (half of the CLI's 0.16 s start-up).
_EXPORTS = {
    "ChangeResult": ".maintain",
    "CommandWarm": ".warming",
    "Confirm": ".maintain",
    "Criteria": "..selection",
    "DoctorResult": ".maintain",
    "HostInfo": ".restore",
    "ImageInfo": "..oci.inspect",
    "IndexResult": ".maintain",
    "ListResult": ".maintain",
    "Listing": ".maintain",
    "PackageResult": ".ship",
    "Plan": "..prune",
    "Progress": "..progress",
    "ProgressEvent": "..progress",
    "PushResult": ".ship",
    "RegistryOptions": "..oci.transfer",
    "RestoreOptions": ".restore",
    "RestoreReport": "..extract",
    "TorchWarm": ".warming",
    "TrackResult": ".tracking",
    "TritonWarm": ".warming",
    "VllmWarm": "..warm.vllm_backend",
    "WarmResult": ".warming",
    "WarmSpec": ".warming",
    "dedup": ".maintain",
    "default_cache_dir": ".restore",
    "doctor": ".maintain",
    "extract": ".restore",
    "gc": ".maintain",
    "gpu": ".restore",
    "index": ".maintain",
    "inspect": ".ship",
    "list_entries": ".maintain",
    "package": ".ship",
    "prune": ".maintain",
    "pull": ".restore",
    "push": ".ship",
    "save_gpu_profile": ".restore",
    "show": ".maintain",
    "stream_entries": ".maintain",
    "stream_json": ".maintain",
    "track": ".tracking",
    "warm": ".warming",
}

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
    "Listing",
    "PackageResult",
    "Plan",
    "Progress",
    "ProgressEvent",
    "PushResult",
    "RegistryOptions",
    "RestoreOptions",
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
    "save_gpu_profile",
    "show",
    "stream_entries",
    "stream_json",
    "track",
    "warm",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
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
        Listing,
        ListResult,
        dedup,
        doctor,
        gc,
        index,
        list_entries,
        prune,
        show,
        stream_entries,
        stream_json,
    )
    from .restore import (
        HostInfo,
        RestoreOptions,
        default_cache_dir,
        extract,
        gpu,
        pull,
        save_gpu_profile,
    )
    from .ship import PackageResult, PushResult, inspect, package, push
    from .tracking import TrackResult, track
    from .warming import CommandWarm, TorchWarm, TritonWarm, WarmResult, WarmSpec, warm
