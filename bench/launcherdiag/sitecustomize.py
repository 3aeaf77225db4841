"""Diagnostics for the GPU proof of dynamic shapes (bench/gpu_proof_shapes.py --diag): put on
PYTHONPATH with TCM_DIAG_LOG=FILE, every process appends one JSON line per Triton launcher it
constructs (kernel name, signature, constants: what the launcher's key hashes) and per
Inductor decision to launch a kernel statically (or not, and why)."""

import importlib.abc
import json
import os
import sys

LOG = os.environ.get("TCM_DIAG_LOG")


def _log(record):
    with open(LOG, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), **record}, default=str) + "\n")


def _patch_driver(mod):
    cls = getattr(mod, "CudaLauncher", None)
    if cls is None:
        return
    inner = cls.__init__

    def init(self, src, metadata):
        _log(
            {
                "what": "launcher",
                "name": getattr(metadata, "name", None),
                "signature": dict(getattr(src, "signature", {}) or {}),
                "constants": {str(k): v for k, v in (getattr(src, "constants", {}) or {}).items()},
            }
        )
        return inner(self, src, metadata)

    cls.__init__ = init


def _patch_heuristics(mod):
    cls = getattr(mod, "StaticTritonCompileResult", None)
    if cls is None:
        return
    inner = cls.can_statically_launch

    def can(kernel, inductor_meta, triton_meta, heuristic_type):
        out = inner(kernel, inductor_meta, triton_meta, heuristic_type)
        _log(
            {
                "what": "static",
                "name": getattr(kernel.metadata, "name", None),
                "static": out is not None,
                "shared": getattr(kernel.metadata, "shared", None),
                "hash": getattr(kernel, "hash", None),
            }
        )
        return out

    cls.can_statically_launch = staticmethod(can)


PATCHES = {
    "triton.backends.nvidia.driver": _patch_driver,
    "torch._inductor.runtime.triton_heuristics": _patch_heuristics,
}


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                loader, patch = spec.loader, PATCHES[name]
                run = loader.exec_module

                def exec_module(module, run=run, patch=patch):
                    run(module)
                    patch(module)

                loader.exec_module = exec_module
                return spec
        return None


if LOG:
    sys.meta_path.insert(0, _Finder())
