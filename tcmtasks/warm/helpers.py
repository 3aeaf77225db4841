"""Triton's driver helpers, built at warm time so a node needs no C compiler.

At its first launch Triton compiles C helpers with gcc (shared FACTS 30): ``cuda_utils`` once
per cache (the CUDA driver's utilities) and a ``__triton_launcher`` per kernel signature (the
launch stub), each stored in the cache as ``<name><EXT_SUFFIX>`` under
``sha256(source + platform_key())``. A runtime image without a compiler fails there ("Failed
to find C compiler"), and one with a compiler spends 0.2-0.5 s on it.

``platform_key()`` ends with what Python's ``platform.architecture()`` learns from running the
``file`` program: "ELF", or "" on a machine without ``file`` on PATH; helpers are built under
both keys (``_linkages``).

Here the workload's own interpreter (this runs in the warm's child) asks Triton's own
``compile_module_from_src`` for them, so the key, the name and the ``EXT_SUFFIX`` are exactly
those the node looks up; nothing of Triton's keying is re-implemented. Without a GPU the CUDA
helpers link against a ``libcuda.so.1`` stub tcm makes (an empty shared library with that
SONAME: no CUDA toolkit needed); loading the built module then fails here, as it must without
a driver, after Triton has stored it. HIP's are not built: both ``hip_utils`` and the HIP
``__triton_launcher`` embed the path of the node's ``libamdhip64.so`` in their source
(Triton 3.6 ``backends/amd/driver.py``, ``_get_path_to_hip_runtime_dylib``), so their keys are
the node's own and a runner without that file cannot even produce the source.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..targets import Target


@dataclass
class HelperReport:
    built: list[str] = field(default_factory=list)  # "cuda_utils", "__triton_launcher (...)"
    failed: str | None = None  # why none could be built here (said once)
    skipped: str | None = None  # what is never built here, and why

    def to_dict(self) -> dict[str, Any]:
        return {"built": self.built, "failed": self.failed, "skipped": self.skipped}


@contextlib.contextmanager
def libcuda_for_building() -> Iterator[None]:
    """``TRITON_LIBCUDA_PATH`` naming a real libcuda.so.1 when ldconfig knows one, else a stub
    with that SONAME made in a temp dir (the helpers link ``-l:libcuda.so.1``)."""
    if os.environ.get("TRITON_LIBCUDA_PATH") or _ldconfig_has("libcuda.so.1"):
        yield
        return
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")
    with tempfile.TemporaryDirectory(prefix="tcm-libcuda-") as tmp:
        if cc:
            src = os.path.join(tmp, "stub.c")
            with open(src, "w") as f:
                f.write("void tcm_libcuda_stub(void) {}\n")
            subprocess.run(
                [cc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o",
                 os.path.join(tmp, "libcuda.so.1"), src],
                check=False, capture_output=True,
            )  # fmt: skip
        os.environ["TRITON_LIBCUDA_PATH"] = tmp
        try:
            yield
        finally:
            os.environ.pop("TRITON_LIBCUDA_PATH", None)


def _ldconfig_has(lib: str) -> bool:
    try:
        out = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
    except OSError:
        return False
    return lib in out


def build_helpers(compiled: list[tuple[Target, Any]]) -> HelperReport:
    """Build ``cuda_utils`` (when a CUDA target is among ``compiled``) and the launcher of
    each distinct kernel signature, into the cache Triton writes to (``TRITON_CACHE_DIR``).
    ``compiled``: (target, CompiledKernel) pairs from the warm."""
    report = HelperReport()
    # a cache hit on a module that cannot load here makes Triton log a warning and rebuild:
    # each helper is asked for once, and Triton's warning stays quiet meanwhile
    quiet = logging.getLogger("triton.runtime.build")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with libcuda_for_building():
            for linkage in _linkages():
                with _platform_linkage(linkage):
                    _build_all(report, compiled)
    finally:
        quiet.setLevel(level)
    return report


def _build_all(report: HelperReport, compiled: list[tuple[Target, Any]]) -> None:
    if any(t.backend == "cuda" for t, _ in compiled):
        _one(report, "cuda_utils", _cuda_utils)
    seen: set[str] = set()
    for target, kernel in compiled:
        if target.backend != "cuda":
            report.skipped = (
                "HIP helpers: their source holds the node's libamdhip64.so path, so the node "
                "builds them"
            )
            continue
        ident = _signature_id(target, kernel)
        if ident in seen or report.failed:
            continue
        seen.add(ident)
        name = getattr(kernel, "name", "?")
        _one(report, f"__triton_launcher ({name})", lambda k=kernel: _launcher(k))


def _linkages() -> list[str]:
    """Both values ``platform_key()`` can take on this machine. Its last field is
    ``platform.architecture()[1]``, which Python reads by running the ``file`` program on the
    interpreter: "ELF" where ``file`` is on PATH, "" where it is not (slim runtime images often
    lack it). The node's PATH is not known here, so the helpers go under both keys."""
    import platform

    here = platform.architecture()[1]
    return list(dict.fromkeys([here, "ELF" if sys.platform.startswith("linux") else here, ""]))


@contextlib.contextmanager
def _platform_linkage(linkage: str) -> Iterator[None]:
    """Triton's ``platform_key()`` as a machine whose ``file`` says ``linkage`` computes it."""
    import platform

    from triton.runtime import build

    real = platform.architecture
    bits = real()[0]
    platform.architecture = lambda *a, **k: (bits, linkage)
    build.platform_key.cache_clear()
    try:
        yield
    finally:
        platform.architecture = real
        build.platform_key.cache_clear()


def _one(report: HelperReport, what: str, build: Any) -> None:
    try:
        build()
    except ImportError:
        pass  # built and stored; it cannot load without a driver, as expected here
    except (subprocess.CalledProcessError, RuntimeError, OSError, AssertionError) as exc:
        report.failed = (
            f"Triton's C helpers could not be built here ({type(exc).__name__}: {exc}); the "
            "node will build them at its first launch (it needs a C compiler and Python's "
            "headers)"
        )
        return
    if what not in report.built:
        report.built.append(what)


def _cuda_utils() -> None:
    from triton.backends.nvidia import driver

    driver.libcuda_dirs.cache_clear()
    driver.library_dirs.cache_clear()
    driver.CudaUtils()


def _launcher(kernel: Any) -> None:
    from triton.backends.nvidia.driver import CudaLauncher

    CudaLauncher(kernel.src, kernel.metadata)


def _signature_id(target: Target, kernel: Any) -> str:
    """What a CUDA launcher's source depends on (``make_launcher``'s arguments): signature,
    constants, tensor descriptors; kernels equal in these share one launcher."""
    src = kernel.src
    return "|".join([
        target.backend,
        repr(sorted((str(k), str(v)) for k, v in getattr(src, "signature", {}).items())),
        repr(sorted((str(k), str(v)) for k, v in getattr(src, "constants", {}).items())),
        repr(getattr(kernel.metadata, "tensordesc_meta", None)),
    ])  # fmt: skip
