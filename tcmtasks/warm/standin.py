"""Compile Triton kernels for a named GPU without that GPU, under the key a real launch computes.

``triton.compile(ASTSource(...), target=...)`` compiles too, but under a different key than the JIT
computes at launch, so it never hits (docs/cache-formats.md, "Compiling without the GPU"). Going
through ``kernel.warmup`` with a stand-in driver reproduces the launch path: the JIT binds and
specialises the arguments exactly as it would on the GPU, and only the driver's answers (target,
device, stream) are ours.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from typing import Any

from ..errors import MissingDependency, UsageError
from ..targets import Target

#: dtype names users write -> Triton's type strings. A stand-in must carry Triton's own dtype
#: object: a name that Triton does not canonicalise is silently taken as another type.
DTYPES = {
    "fp16": "float16", "float16": "float16", "half": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp32": "float32", "float32": "float32", "float": "float32",
    "fp64": "float64", "float64": "float64", "double": "float64",
    "fp8e4nv": "float8e4nv", "float8_e4m3fn": "float8e4nv",
    "fp8e5": "float8e5", "float8_e5m2": "float8e5",
    "i8": "int8", "int8": "int8", "i16": "int16", "int16": "int16",
    "i32": "int32", "int32": "int32", "i64": "int64", "int64": "int64",
    "u8": "uint8", "uint8": "uint8", "i1": "int1", "bool": "int1",
}  # fmt: skip


def _triton() -> Any:
    try:
        import triton
    except ImportError:
        raise MissingDependency("Triton (needed to compile kernels)", "triton") from None
    return triton


def triton_dtype(name: str) -> Any:
    """Triton's dtype object for a user-facing name (``float16``, ``torch.bfloat16``, ``fp8e5``)."""
    import triton.language as tl

    key = str(name).strip().lower().removeprefix("torch.")
    if key not in DTYPES:
        raise UsageError(f"unknown dtype {name!r}; use one of: {', '.join(sorted(DTYPES))}")
    return getattr(tl, DTYPES[key])


class TensorStandIn:
    """What the JIT needs of a tensor argument: its dtype and an aligned device pointer.

    ``data_ptr`` is 16-byte aligned, as real allocations are, so the ``tt.divisibility`` hint
    (part of the key) matches. ``ptr_range`` answers the HIP backend's "fits in 2 GB" question
    the way a tensor of ``nbytes`` would.
    """

    def __init__(self, dtype: str | Any, nbytes: int = 1 << 20):
        self.dtype = triton_dtype(dtype) if isinstance(dtype, str) else dtype
        self.nbytes = nbytes

    def data_ptr(self) -> int:
        return 1 << 32

    def ptr_range(self) -> int:
        return self.nbytes

    def __repr__(self) -> str:
        return f"TensorStandIn({self.dtype})"


def _standin_driver(target: Target) -> Any:
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase

    arch: int | str = int(target.arch) if target.backend == "cuda" else target.arch
    gpu_target = GPUTarget(target.backend, arch, target.warp_size)

    class StandInDriver(DriverBase):  # type: ignore[misc]
        """Answers the JIT's questions as a GPU of ``target`` would; launches nothing."""

        @classmethod
        def is_active(cls) -> bool:
            return False

        def get_current_target(self) -> Any:
            return gpu_target

        def get_current_device(self) -> int:
            return 0

        def get_current_stream(self, device: int | None = None) -> int:
            return 0

        def get_active_torch_device(self) -> Any:
            return None

        def map_python_to_cpp_type(self, ty: str) -> str:
            return ty

        def get_benchmarker(self) -> Any:
            raise RuntimeError("a stand-in driver cannot benchmark; give autotune configs")

        def get_device_interface(self) -> Any:
            raise RuntimeError("a stand-in driver has no device")

        def get_empty_cache_for_benchmark(self) -> Any:
            raise RuntimeError("a stand-in driver cannot benchmark")

        def clear_cache(self, cache: Any) -> None:
            pass

    return StandInDriver()


@contextlib.contextmanager
def _torch_placeholder() -> Iterator[None]:
    """Triton's HIP backend imports torch while specialising arguments (3.5+), only to test
    ``isinstance(arg, torch.Tensor)`` after it has asked our stand-in's ``ptr_range``. On a
    machine without torch, a placeholder module answers that import for the duration of the
    compile; it is removed after, and never installed when torch is importable."""
    try:
        import torch  # noqa: F401

        yield
        return
    except ImportError:
        pass
    placeholder = types.ModuleType("torch")
    placeholder.Tensor = type("Tensor", (), {})  # type: ignore[attr-defined]
    sys.modules["torch"] = placeholder
    try:
        yield
    finally:
        if sys.modules.get("torch") is placeholder:
            del sys.modules["torch"]


@contextlib.contextmanager
def target_active(target: Target) -> Iterator[None]:
    """Make Triton's JIT compile for ``target`` until the block ends."""
    _triton()
    from triton.runtime.driver import driver

    previous = driver._active
    driver.set_active(_standin_driver(target))
    try:
        with _torch_placeholder():
            yield
    finally:
        driver._active = previous


def warmup(kernel: Any, *args: Any, grid: tuple[int, ...] = (1,), **meta: Any) -> Any:
    """Compile one specialisation through the JIT launch path (under ``target_active``).

    ``args`` are TensorStandIn for tensors and plain ints/floats for scalars (ints specialise
    on ``== 1`` and ``% 16 == 0`` exactly as at launch); ``meta`` holds constexprs and
    ``num_warps``/``num_stages``. Each call clears the kernel's per-device memo so that
    switching targets in one process recompiles rather than reusing the last target's binder.
    """
    kernel.device_caches.clear()
    return kernel.warmup(*args, grid=grid, **meta)
