"""Kernel sets: a Python module that lists the launches a workload makes, so a cache for them
can be compiled anywhere (``tcm warm --backend triton``) and checked on a GPU.

    from tcmtasks.warm.kernelset import Launch, Tensor
    KERNELS = [
        Launch(add_kernel, [Tensor("fp32", 98432), Tensor("fp32", 98432),
                            Tensor("fp32", 98432), 98432], meta={"BLOCK": 1024}),
    ]

Integer arguments are given by value: Triton specialises on ``== 1`` and ``% 16 == 0``, so a
representative value gives the key a real launch computes. ``triton.autotune`` kernels are
expanded into one launch per config, ``triton.heuristics`` values are computed from the
arguments, exactly as they would be at launch.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError


@dataclass(frozen=True)
class Tensor:
    """A tensor argument: dtype name (fp16, bf16, fp32, int32...) and shape (elements)."""

    dtype: str
    shape: tuple[int, ...] | int = 1

    @property
    def numel(self) -> int:
        n = 1
        for d in (self.shape,) if isinstance(self.shape, int) else self.shape:
            n *= d
        return n


@dataclass
class Launch:
    kernel: Any  # a JITFunction, Autotuner or Heuristics
    args: list[Any]
    meta: dict[str, Any] = field(default_factory=dict)
    grid: tuple[int, ...] = (1,)


@dataclass
class Variant:
    """One compiled specialisation: the JIT function and everything a launch passes it."""

    name: str
    fn: Any
    args: list[Any]
    kwargs: dict[str, Any]
    grid: tuple[int, ...]


def load(path: str | Path) -> list[Launch]:
    """Import a kernel-set module (a file path or a module name) and return its KERNELS."""
    text = str(path)
    try:
        if text.endswith(".py") or "/" in text:
            file = Path(text)
            if not file.is_file():
                raise UsageError(f"kernel set {text} does not exist")
            spec = importlib.util.spec_from_file_location(f"tcm_kernelset_{file.stem}", file)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[spec.name] = module  # type: ignore[union-attr]
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(text)
    except UsageError:
        raise
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise UsageError(
            f"kernel set {text} failed to import: {exc.__class__.__name__}: {exc} "
            f"({where.filename}:{where.lineno})"
        ) from None
    kernels = getattr(module, "KERNELS", None)
    if not isinstance(kernels, list) or not all(isinstance(k, Launch) for k in kernels):
        raise UsageError(f"kernel set {text} must define KERNELS = [Launch(...), ...]")
    return kernels


def expand(launch: Launch) -> list[Variant]:
    """Every specialisation a launch compiles: one per autotune config, heuristics applied."""
    from triton.runtime.autotuner import Autotuner, Heuristics
    from triton.runtime.jit import JITFunction

    def walk(obj: Any, kwargs: dict[str, Any]) -> list[Variant]:
        if isinstance(obj, Autotuner):
            out = []
            for cfg in obj.configs:
                out += walk(obj.fn, {**cfg.all_kwargs(), **kwargs})
            return out
        if isinstance(obj, Heuristics):
            named = dict(zip(obj.arg_names, launch.args, strict=False))
            extra = {k: v({**named, **kwargs}) for k, v in obj.values.items()}
            return walk(obj.fn, {**kwargs, **extra})
        if isinstance(obj, JITFunction):
            return [Variant(obj.__name__, obj, launch.args, kwargs, launch.grid)]
        raise UsageError(f"{obj!r} is not a triton.jit kernel")

    return walk(launch.kernel, dict(launch.meta))
