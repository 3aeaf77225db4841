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
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..targets import Target

log = logging.getLogger("tcm")


@dataclass
class HelperReport:
    built: list[str] = field(default_factory=list)  # "cuda_utils", "__triton_launcher (...)"
    failed: str | None = None  # why none could be built here (said once)
    skipped: str | None = None  # what is never built here, and why

    def to_dict(self) -> dict[str, Any]:
        return {"built": self.built, "failed": self.failed, "skipped": self.skipped}


@contextlib.contextmanager
def libcuda_for_building(node_dirs: list[str] | None = None) -> Iterator[None]:
    """A ``libcuda.so.1`` for the helpers to link (``-l:libcuda.so.1``): the real one where
    ldconfig knows one, else a stub with that SONAME made in a temp dir. ``node_dirs``: the
    node's answer to Triton's ``libcuda_dirs()`` (its ldconfig's dirs, in order; Triton 3.8+
    hashes them into the key), which Triton is then given here while the linker finds the
    stub through ``LIBRARY_PATH``.

    The stub defines none of the driver's symbols, and a linker that defaults to
    ``--as-needed`` (Debian's gcc 12 here) then drops ``libcuda.so.1`` from the module's
    NEEDED list: on the node its ``cu*`` symbols stay unresolved, the load fails and Triton
    rebuilds it (seen on the H200: "compiled module cuda_utils.so could not be loaded", then
    "Failed to find C compiler"). So the build's compiler is a wrapper that links
    ``--no-as-needed`` (Triton takes ``$CC`` first; it is not in any key)."""
    real = bool(os.environ.get("TRITON_LIBCUDA_PATH")) or _ldconfig_has("libcuda.so.1")
    if not node_dirs and real:
        yield
        return
    saved = {k: os.environ.get(k) for k in ("TRITON_LIBCUDA_PATH", "LIBRARY_PATH", "CC")}
    with tempfile.TemporaryDirectory(prefix="tcm-libcuda-") as tmp:
        if not real:
            cc = _stub(tmp)
            os.environ["LIBRARY_PATH"] = os.pathsep.join(
                p for p in (tmp, saved["LIBRARY_PATH"]) if p
            )
            if cc:
                os.environ["CC"] = _no_as_needed(tmp, cc)
            os.environ["TRITON_LIBCUDA_PATH"] = tmp  # a real one, set by the user, stays
        _forget_libcuda_dirs()
        try:
            with _libcuda_dirs_as(node_dirs):
                yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            _forget_libcuda_dirs()


@contextlib.contextmanager
def _libcuda_dirs_as(dirs: list[str] | None) -> Iterator[None]:
    """Triton's ``libcuda_dirs()`` answering ``dirs``, as on the node (``TRITON_LIBCUDA_PATH``
    names one dir only; a node's ldconfig may list several: the H200 machine lists
    ``/usr/local/nvidia/lib64`` and ``/lib``)."""
    if not dirs:
        yield
        return
    from triton.backends.nvidia import driver

    real = driver.libcuda_dirs
    driver.libcuda_dirs = lambda: list(dirs)  # library_dirs() looks it up by name
    _forget_libcuda_dirs()
    try:
        yield
    finally:
        driver.libcuda_dirs = real
        _forget_libcuda_dirs()


def _stub(tmp: str) -> str | None:
    """The stub ``libcuda.so.1`` in ``tmp``; the C compiler used (None: there is none, and
    Triton's own build then fails and says so)."""
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None
    src = os.path.join(tmp, "stub.c")
    with open(src, "w") as f:
        f.write("void tcm_libcuda_stub(void) {}\n")
    subprocess.run(
        [cc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o",
         os.path.join(tmp, "libcuda.so.1"), src],
        check=False, capture_output=True,
    )  # fmt: skip
    return cc


def _no_as_needed(tmp: str, cc: str) -> str:
    """A compiler that runs ``cc`` with ``-Wl,--no-as-needed`` first (see above)."""
    wrapper = os.path.join(tmp, "cc-no-as-needed")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nexec {shlex.quote(cc)} -Wl,--no-as-needed "$@"\n')
    os.chmod(wrapper, 0o755)
    return wrapper


def _forget_libcuda_dirs() -> None:
    """Triton caches its answers (``functools.lru_cache``); they must follow the env."""
    with contextlib.suppress(ImportError):
        from triton.backends.nvidia import driver

        for name in ("libcuda_dirs", "library_dirs"):
            clear = getattr(getattr(driver, name, None), "cache_clear", None)
            if clear is not None:
                clear()


def _ldconfig_has(lib: str) -> bool:
    try:
        out = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
    except OSError:
        return False
    return lib in out


def print_report(report: HelperReport) -> None:
    """The child's last result line (``split_report`` reads it back in the parent)."""
    print(json.dumps({"helpers": report.to_dict()}), flush=True)


def split_report(
    lines: list[dict[str, Any]], *, said: set[str] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A child's result lines without its helper report, and the report; a failure to build
    is logged once per warm (``said`` carries what was said across a fleet's children)."""
    found = [x["helpers"] for x in lines if set(x) == {"helpers"}]
    report = found[0] if found else {}
    said = set() if said is None else said
    failed = report.get("failed")
    if failed and failed not in said:
        said.add(failed)
        log.warning("%s", failed)
    return [x for x in lines if set(x) != {"helpers"}], report


@contextlib.contextmanager
def inductor_launches() -> Iterator[list[tuple[Target, Any]]]:
    """The kernels a torch.compile run launches through Triton's own launcher, as Inductor
    makes its launchers: those its static CUDA launcher cannot serve
    (``TritonCompileResult``; torch 2.11 runtime/triton_heuristics.py ``_precompile_config``,
    ``can_statically_launch``). The rest never build a ``__triton_launcher``."""
    from torch._inductor.runtime import triton_heuristics as th

    found: list[tuple[Target, Any]] = []
    inner = th.CachingAutotuner._make_launchers

    def make_launchers(self: Any) -> Any:
        for result in self.compile_results:
            if isinstance(result, th.TritonCompileResult):
                t = result.kernel.metadata.target
                found.append((Target(str(t.backend), str(t.arch), int(t.warp_size)), result.kernel))
        return inner(self)

    th.CachingAutotuner._make_launchers = make_launchers
    try:
        yield found
    finally:
        th.CachingAutotuner._make_launchers = inner


def build_helpers(
    compiled: list[tuple[Target, Any]],
    *,
    cuda_utils: bool | None = None,
    libcuda_dirs: list[str] | None = None,
) -> HelperReport:
    """Build ``cuda_utils`` (when a CUDA target is among ``compiled``, or ``cuda_utils``) and
    the launcher of each distinct kernel signature, into the cache Triton writes to
    (``TRITON_CACHE_DIR``). ``compiled``: (target, CompiledKernel) pairs from the warm.
    ``libcuda_dirs``: the nodes' answer to Triton's ``libcuda_dirs()`` (the dirs ldconfig
    lists for ``libcuda.so.1``, in order), for a Triton that hashes them into the key (3.8+,
    ``_keys_hold_build_dirs``); there, without it and without a driver here, nothing is built
    and the report says why."""
    report = HelperReport()
    wants_cuda = cuda_utils or (
        cuda_utils is None and any(t.backend == "cuda" for t, _ in compiled)
    )
    node_dirs: list[str] | None = None
    if wants_cuda and _keys_hold_build_dirs():
        if libcuda_dirs:
            node_dirs = list(libcuda_dirs)
        elif not (os.environ.get("TRITON_LIBCUDA_PATH") or _ldconfig_has("libcuda.so.1")):
            report.skipped = (
                "CUDA helpers: this Triton hashes the node's libcuda.so.1 dirs into their keys "
                "and none are known here (--libcuda-dir, or a GPU profile that records them)"
            )
            return report
    # a cache hit on a module that cannot load here makes Triton log a warning and rebuild:
    # each helper is asked for once, and Triton's warning stays quiet meanwhile
    quiet = logging.getLogger("triton.runtime.build")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with libcuda_for_building(node_dirs):
            for linkage in _linkages():
                with _platform_linkage(linkage):
                    _build_all(report, compiled, cuda_utils)
    finally:
        quiet.setLevel(level)
    return report


def _keys_hold_build_dirs() -> bool:
    """Whether this Triton's helper key hashes the build's dirs beside source and
    ``platform_key()``: 3.8.0 and 3.9.0 (``runtime/build.py`` ``_get_cache_manager``: language,
    library dirs (its own ``backends/nvidia/lib`` and the libcuda dir), include dirs (its
    own), libraries); 3.6.0 hashes ``src + platform_key()`` alone. Such a helper hits on a node
    whose Triton sits at the warm's path and whose driver is in the named dir."""
    from triton.runtime import build

    return hasattr(build, "_get_cache_manager")


def _build_all(
    report: HelperReport, compiled: list[tuple[Target, Any]], cuda_utils: bool | None
) -> None:
    if cuda_utils or (cuda_utils is None and any(t.backend == "cuda" for t, _ in compiled)):
        _one(report, "cuda_utils", _cuda_utils)
    if not _launchers_per_signature():
        return  # Triton 3.8+: cuda_utils's own ``launch`` starts every kernel
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


def _launchers_per_signature() -> bool:
    """Whether this Triton compiles a ``__triton_launcher`` per kernel signature: 3.6.0 does
    (``make_launcher`` in its NVIDIA driver); in 3.8.0 ``CudaLauncher`` calls
    ``cuda_utils.launch`` and compiles nothing (both read here)."""
    from triton.backends.nvidia import driver

    return hasattr(driver, "make_launcher")


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

    _forget_libcuda_dirs()
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


def inductor_helpers(
    launched: list[tuple[Any, Any]], libcuda_dirs: list[str] | None = None
) -> HelperReport:
    """Triton's C helpers for a torch.compile run (``build_helpers``), where the node looks
    them up: beside Inductor's kernels (``triton/<device>``), from where a restore also places
    them in the node's own Triton cache. Inductor's kernel modules call
    ``set_driver_to_gpu()`` at import (codegen/triton.py), before its first
    ``CachingAutotuner`` points ``TRITON_CACHE_DIR`` at its own dir
    (runtime/triton_heuristics.py), so a node's first ``cuda_utils`` lookup is in
    ``~/.triton/cache`` unless the workload set that variable."""
    from torch._inductor.runtime.cache_dir_utils import triton_cache_dir

    os.environ.setdefault("TRITON_CACHE_DIR", triton_cache_dir(0))
    return build_helpers(launched, cuda_utils=True, libcuda_dirs=libcuda_dirs)
