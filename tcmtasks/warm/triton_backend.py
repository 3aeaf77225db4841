"""``tcm warm --backend triton``: compile a kernel set for named targets, no GPU needed.

Runs in a child process (``python -m tcmtasks.warm.triton_backend``) so that Triton starts
with ``TRITON_CACHE_DIR`` pointing at the output and nothing of the stand-in driver leaks into
the tcm process. Every variant goes through ``kernel.warmup`` under a stand-in driver
(``standin.py``), the launch path itself, so the keys are those a real launch computes.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..errors import MissingDependency, UsageError
from ..resources import kernel_set
from ..targets import Target
from .child import child_main, run_child
from .helpers import build_helpers, print_report, split_report

ELEMENT_SIZE = {"8": 1, "16": 2, "32": 4, "64": 8, "bool": 1, "int1": 1}


def _nbytes(dtype: str, numel: int) -> int:
    for bits, size in ELEMENT_SIZE.items():
        if dtype.endswith(bits) or bits in dtype:
            return numel * size
    return numel * 4


def standin_args(args: list[Any]) -> list[Any]:
    """A launch's arguments, each Tensor spec replaced by a stand-in of the same size."""
    from .kernelset import Tensor
    from .standin import TensorStandIn

    return [
        TensorStandIn(a.dtype, _nbytes(a.dtype, a.numel)) if isinstance(a, Tensor) else a
        for a in args
    ]


def compile_kernelset(
    kernels: str,
    targets: list[Target],
    out: Path,
    *,
    python: str | None = None,
    libcuda_dirs: list[str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Compile every launch of the kernel set for every target into ``out`` (child process),
    and Triton's C helpers for them (``warm/helpers.py``): the variants, and what the helpers'
    build did. ``kernels`` is a file, a module name, or the name of a kernel set shipped with
    tcm."""
    if not targets:
        raise UsageError("the triton backend needs --target (e.g. cuda:80,cuda:90,hip:gfx942)")
    spec = kernel_set(kernels)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TRITON_CACHE_DIR": str(out.resolve())}
    env.pop("TRITON_CACHE_MANAGER", None)
    lines = run_child(
        "tcmtasks.warm.triton_backend",
        [
            "--kernels",
            spec,
            *[a for t in targets for a in ("--target", str(t))],
            *[a for d in libcuda_dirs or [] for a in ("--libcuda-dir", d)],
        ],
        env,
        what="compiling the kernel set",
        extra_path=os.getcwd(),  # kernel sets named as modules of the current project
        python=python,
    )
    return split_report(lines)


def _child(kernels: str, targets: list[str], libcuda_dirs: list[str]) -> None:
    try:
        import triton  # noqa: F401
    except ImportError:
        raise MissingDependency(
            "Triton (the triton warm backend compiles with it)", "triton"
        ) from None
    from .kernelset import expand, load
    from .standin import target_active, warmup

    launches = load(kernels)
    compiled_all = []
    for text in targets:
        target = Target.parse(text)
        with target_active(target):
            for launch in launches:
                for v in expand(launch):
                    args = standin_args(v.args)
                    try:
                        compiled = warmup(v.fn, *args, grid=v.grid, **v.kwargs)
                    except Exception as exc:
                        raise UsageError(
                            f"{v.name} failed to compile for {target}: "
                            f"{exc.__class__.__name__}: {exc}"
                        ) from None
                    compiled_all.append((target, compiled))
                    print(
                        json.dumps(
                            {
                                "target": str(target),
                                "name": v.name,
                                "hash": compiled.hash,
                                "meta": {k: str(x) for k, x in v.kwargs.items()},
                            }
                        ),
                        flush=True,
                    )
    print_report(build_helpers(compiled_all, libcuda_dirs=libcuda_dirs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", required=True)
    ap.add_argument("--target", action="append", default=[])
    ap.add_argument("--libcuda-dir", action="append", default=[])
    args = ap.parse_args()
    child_main(lambda: _child(args.kernels, args.target, args.libcuda_dir))


if __name__ == "__main__":
    main()
