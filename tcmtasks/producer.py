"""Where a cache came from, and what this host would compile with: the parts of Triton's key that no
entry shows (docs/cache-formats.md, "The key"): the Triton build (version, Python ABI, and a hash of
``triton_key()`` itself), and the CUDA backend's ptxas version: torch's own where its build ships
one (``use_workload_ptxas``), else Triton's."""

from __future__ import annotations

import contextlib
import hashlib
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Producer:
    triton_version: str | None = None
    python: str | None = None  # "cp312": the same Triton version per ABI gives other keys
    triton_key: str | None = None  # sha256 of triton_key()[:16]: equal builds, equal prefix
    ptxas: str | None = None  # CUDA backend part of the key, as Triton alone resolves it
    torch_ptxas: str | None = None  # the one torch's build ships: Inductor's compiles use it
    #: where Triton is imported from: HIP keys hold it (the AMD backend's options hash the
    #: absolute paths of its bitcode libraries, ``<triton_dir>/backends/amd/lib/*.bc``)
    triton_dir: str | None = None
    rocm: str | None = None
    #: whether this Triton's HIP keys hold its bitcode libraries' paths (3.6, 3.8: their
    #: absolute paths; 3.9: their contents), as its own ``HIPOptions.hash`` answers; None:
    #: not known (no AMD backend to ask)
    hip_paths_in_key: bool | None = None
    torch: str | None = None
    gpus: list[str] = field(default_factory=list)  # device names: Inductor's keys hold them
    targets: list[str] = field(default_factory=list)  # "cuda:90", as the GPUs above

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, [])}

    @classmethod
    def from_dict(cls, data: Any) -> Producer | None:
        if not isinstance(data, dict):
            return None
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def python_tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def detect(*, with_key: bool = True) -> Producer:
    """This process's Triton build and toolchain (fields stay None where nothing is known).

    The Triton part is cached (``$XDG_CACHE_HOME/tcm/triton-build.json``) under a stamp of
    every file of the installed Triton package and of the ptxas setting: ``triton_key()``
    hashes Triton's sources and libraries and ptxas runs as a subprocess, 0.3-1.2 s that every
    pull, extract and inspect paid. Any change to the install (a reinstall, an edited source
    file) changes the stamp."""
    p = Producer(python=python_tag(), triton_dir=triton_dir())
    stamp = _triton_stamp()
    if stamp is None:
        return p
    cached = _read_build_cache().get(stamp)
    if cached is not None and (cached.get("triton_key") or not with_key):
        p.triton_version = cached.get("triton_version")
        p.triton_key = cached.get("triton_key") if with_key else None
        p.ptxas = cached.get("ptxas")
        p.torch_ptxas = cached.get("torch_ptxas")
        p.hip_paths_in_key = cached.get("hip_paths_in_key")
    else:
        _detect_triton(p, with_key)
        if with_key:
            _write_build_cache(stamp, p)
    # importing torch costs seconds, and this runs on every pull; ROCm's version is only known
    # when the process has torch loaded already
    p.torch = torch_version()
    torch = sys.modules.get("torch")
    if torch is not None:
        p.rocm = getattr(getattr(torch, "version", None), "hip", None)
    return p


def torch_version() -> str | None:
    """``torch.__version__`` without importing torch (seconds): its ``version.py``. The wheel's
    metadata is not it: PyPI's CUDA 13.0 build of 2.11.0 says ``2.11.0`` there and
    ``2.11.0+cu130`` here, the same build from PyTorch's own index says ``2.11.0+cu130`` in
    both; the keys hash ``torch.__version__``."""
    import os

    for top in package_dirs("torch"):
        try:
            with open(os.path.join(top, "version.py"), encoding="utf-8") as f:
                m = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)", f.read(), re.M)
        except OSError:
            continue
        if m:
            return m.group(1)
    with contextlib.suppress(Exception):
        import importlib.metadata  # here: 10 ms of start-up for commands that never detect

        return importlib.metadata.version("torch")
    return None


#: Where torch builds that ship a ptxas keep it, as their Inductor looks for it (2.14:
#: ``torch/bin``; 2.13: ``torch/_inductor/bin``).
TORCH_PTXAS = ("bin/ptxas", "_inductor/bin/ptxas")


def package_dirs(name: str) -> list[str]:
    """Where ``import NAME`` would load the package from, without importing it (as Python
    names the dirs, not resolved); empty when it is not installed."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    return list(spec.submodule_search_locations or []) if spec else []


def torch_ptxas() -> str | None:
    """The ptxas this interpreter's torch ships, found without importing torch (seconds)."""
    import os

    for top in package_dirs("torch"):
        for rel in TORCH_PTXAS:
            path = os.path.join(top, rel)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
    return None


def use_workload_ptxas() -> str | None:
    """Point Triton at the ptxas a torch workload compiles with; return it (None: Triton's own).

    Inductor sets ``TRITON_PTXAS_PATH`` to torch's ptxas (when unset) right before it compiles,
    and only on some paths, while Triton keeps the first ptxas version a process reads. On the
    H200 machine (torch 2.11.0+cu130 ships ptxas 13.0.88, Triton 3.6.0 bundles 12.8.93) a warm
    keyed every kernel with 12.8.93 and the workload's FX-graph hit, which compiles the kernels
    it cannot launch from the bundle after the setting, looked them up with 13.0.88 and missed.
    So the torch warm and profile children make the setting first; ``detect`` reports both
    (``ptxas``, ``torch_ptxas``); a plain Triton warm keeps Triton's own, as its workloads do."""
    import os

    if os.environ.get("TRITON_PTXAS_PATH"):
        return os.environ["TRITON_PTXAS_PATH"]
    path = torch_ptxas()
    if path is not None:
        os.environ["TRITON_PTXAS_PATH"] = path
    return path


def _ptxas_version(text: str) -> str:
    m = re.search(r"\bV(\d+\.\d+\.\d+)", text)  # "... release 12.8, V12.8.93"
    return m.group(1) if m else text.strip().splitlines()[-1]


def _detect_triton(p: Producer, with_key: bool) -> None:
    import os
    import subprocess

    try:
        import triton
    except ImportError:
        return
    p.triton_version = getattr(triton, "__version__", None)
    if with_key:
        try:
            from triton.runtime.cache import triton_key

            p.triton_key = hashlib.sha256(triton_key().encode()).hexdigest()[:16]
        except Exception:
            pass
    try:
        from triton.backends.nvidia.compiler import get_ptxas_version

        p.ptxas = _ptxas_version(str(get_ptxas_version()))
    except Exception:
        pass
    p.hip_paths_in_key = hip_paths_in_key()
    shipped = None if os.environ.get("TRITON_PTXAS_PATH") else torch_ptxas()
    if shipped is not None:  # what a torch workload's compiles use (use_workload_ptxas)
        with contextlib.suppress(Exception):
            text = subprocess.run(
                [shipped, "--version"], capture_output=True, text=True, timeout=60, check=True
            ).stdout
            p.torch_ptxas = _ptxas_version(text)


def hip_paths_in_key() -> bool | None:
    """Ask this Triton's AMD backend whether its options' hash (part of every HIP key) changes
    when the bitcode libraries it links sit elsewhere: the same options, once with its own
    ``ocml.bc``/``ockl.bc`` and once with byte-identical copies in another dir. Triton 3.6.0
    and 3.8.0 hash the paths, 3.9.0 the contents (docs/cache-formats.md, "The key"); asking the
    code itself holds for versions no table lists. None when there is no AMD backend to ask."""
    import copy
    import shutil
    import tempfile

    try:
        from triton.backends.amd.compiler import HIPOptions

        options = HIPOptions(arch="gfx942")
        libs = dict(options.extern_libs)
        with tempfile.TemporaryDirectory(prefix="tcm-hip-libs-") as elsewhere:
            moved = {}
            for name, path in libs.items():
                moved[name] = shutil.copy(path, elsewhere)
            other = copy.copy(options)
            object.__setattr__(other, "extern_libs", tuple(moved.items()))
            return bool(options.hash() != other.hash())
    except Exception:  # no AMD backend, or one whose options tcm cannot build
        return None


def triton_dir() -> str | None:
    """The directory ``import triton`` loads from, as Python names it (not resolved: a
    symlinked install is another path to Triton's AMD backend, hence other HIP keys)."""
    return next(iter(package_dirs("triton")), None)


def hip_libdir(host: Producer) -> str | None:
    """Where a HIP kernel compiled on ``host`` names its bitcode libraries."""
    return f"{host.triton_dir}/backends/amd/lib" if host.triton_dir else None


def libdir_of(metadata: Any) -> str | None:
    """The one directory a kernel's metadata names its ``extern_libs`` in (None: none, or
    several)."""
    libs = metadata.get("extern_libs") if isinstance(metadata, dict) else None
    if not isinstance(libs, list):
        return None
    dirs = {
        path.rsplit("/", 1)[0]
        for lib in libs
        if isinstance(lib, list) and len(lib) == 2 and isinstance(path := lib[1], str)
        and "/" in path
    }  # fmt: skip
    return dirs.pop() if len(dirs) == 1 else None


def _triton_stamp() -> str | None:
    """A hash of what ``triton_key()`` and ptxas depend on, without importing Triton: each
    file's path, size and mtime under the package (~10 ms), the interpreter and the ptxas
    variables. None when Triton is not installed."""
    import os

    tops = package_dirs("triton")
    if not tops:
        return None
    h = hashlib.sha256(f"{BUILD_CACHE_FORMAT}\0{sys.executable}\0{sys.version}".encode())
    for var in ("TRITON_PTXAS_PATH", "TRITON_PTXAS_BLACKWELL_PATH", "PATH"):
        h.update(f"\0{var}={os.environ.get(var, '')}".encode())
    ptxas = torch_ptxas()  # torch's own: another build of it is another torch_ptxas
    if ptxas is not None:
        with contextlib.suppress(OSError):
            st = os.stat(ptxas)
            h.update(f"\0{ptxas}:{st.st_size}:{st.st_mtime_ns}".encode())
    for top in tops:
        for dirpath, dirs, names in os.walk(top):
            dirs.sort()
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in sorted(names):
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except OSError:
                    continue
                h.update(f"\0{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


#: Bumped when the build cache gains a field: older entries are then computed again.
BUILD_CACHE_FORMAT = 2


def _build_cache_path() -> Any:
    import os
    from pathlib import Path

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tcm" / "triton-build.json"


def _read_build_cache() -> dict[str, dict[str, Any]]:
    import json

    try:
        data = json.loads(_build_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_build_cache(stamp: str, p: Producer) -> None:
    """Best effort: a cache that cannot be written costs the next run its time, nothing else."""
    import json

    from .atomic import atomic_write_text

    entries = _read_build_cache()
    entries[stamp] = {"triton_version": p.triton_version, "triton_key": p.triton_key,
                      "ptxas": p.ptxas, "torch_ptxas": p.torch_ptxas,
                      "hip_paths_in_key": p.hip_paths_in_key}  # fmt: skip
    keep = dict(list(entries.items())[-8:])  # a few installs (venvs) at most
    with contextlib.suppress(OSError):
        path = _build_cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(keep))


def host_producer() -> Producer:
    """``detect()`` plus this host's GPUs (each kind's device name and target, in one order)."""
    from .targets import host_gpus

    p = detect()
    targets, names = host_gpus()
    p.gpus, p.targets = names, [str(t) for t in targets]
    return p


def mismatches(image: Producer | None, host: Producer) -> list[str]:
    """Why keys written by ``image`` cannot match lookups on ``host`` (empty: they can)."""
    if image is None:
        return []
    out = []
    for name, label in (
        ("triton_version", "Triton"),
        ("python", "Python ABI"),
        ("triton_key", "Triton build (triton_key)"),
    ):
        a, b = getattr(image, name), getattr(host, name)
        if a and b and a != b:
            out.append(f"{label}: image {a}, host {b}")
    if image.ptxas and host.ptxas and image.ptxas not in host_ptxas(host):
        out.append(f"ptxas: image {image.ptxas}, host {' or '.join(host_ptxas(host))}")
    return out


def host_ptxas(host: Producer) -> list[str]:
    """The ptxas builds a host's workloads key with: Triton's own, and torch's where its build
    ships one (Inductor's compiles, use_workload_ptxas)."""
    return [v for v in (host.ptxas, host.torch_ptxas) if v]


RECORD = ".tcm-producer.json"


def write_record(out_dir: Any, producer: Producer, **extra: Any) -> None:
    """Write the producer record next to a warm's output; ``tcm package`` puts it in labels."""
    import json
    from pathlib import Path

    from .atomic import atomic_write_text

    path = Path(out_dir) / RECORD
    atomic_write_text(path, json.dumps({**producer.to_dict(), **extra}, sort_keys=True))
