"""The warm operation: fill a cache for a kernel set or a model, with one spec per backend.

``tcm warm`` and the pipeline's warm stage both call ``warm()`` with a spec, so what a stage
produces is exactly what the command produces.
"""

from __future__ import annotations

import dataclasses
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache.entries import iter_dirs, scan_root
from ..errors import UsageError, map_os_error
from ..producer import host_producer, write_record
from ..progress import Progress, ProgressEvent
from ..runtime import probe_python
from ..targets import Target
from ..warm.vllm_backend import VllmWarm


@dataclass
class TritonWarm:
    """Compile a kernel set for named targets; no GPU needed (the keys match real launches).
    ``kernels``: a file, a module name, or a kernel set shipped with tcm (``tutorials``)."""

    kernels: str
    targets: list[Target | str]
    python: str | None = None  # compile with this interpreter's Triton (the workload's)
    #: where the nodes' libcuda.so.1 is: Triton 3.8+ keys its C helpers by it (warm/helpers.py)
    libcuda_dirs: list[str] = field(default_factory=list)


@dataclass
class CommandWarm:
    """Run any command with ``TRITON_CACHE_DIR`` pointed at the output; with ``inductor`` the
    output is its whole Inductor cache (``TORCHINDUCTOR_CACHE_DIR``), with ``vllm`` its vLLM
    cache root (``VLLM_CACHE_ROOT``)."""

    command: list[str]
    inductor: bool = False
    vllm: bool = False
    #: the workload's ``python warmup.py`` compiled for each of these GPUs, its Inductor
    #: cache in a dir per GPU: without the GPU (warm/script_gpuless.py) or on this machine's
    gpu_profiles: list[str | Path] = field(default_factory=list)

    @property
    def python(self) -> str | None:
        """The interpreter that compiles, where tcm runs the script itself (GPU profiles)."""
        if not self.gpu_profiles:
            return None
        from ..warm.command_backend import script_python

        return script_python(self.command)


@dataclass
class TorchWarm:
    """torch.compile a transformers model built from a config (random weights) on this GPU,
    once per dtype x batch x sequence length; the output is the whole Inductor cache. With
    ``gpu_profiles`` (files from ``tcm gpu --save-profile``, or names of profiles tcm ships:
    ``nvidia-h100``) it compiles for each of those GPUs, on a machine without them
    (tcmtasks/warm/gpuless.py) or on the one that is this machine's, into a dir per GPU."""

    model: str
    batch: list[int] = field(default_factory=lambda: [1])
    seq: list[int] = field(default_factory=lambda: [128])
    dtype: list[str] = field(default_factory=lambda: ["fp16"])
    python: str | None = None  # compile with this interpreter's torch and Triton
    gpu_profiles: list[str | Path] = field(default_factory=list)
    #: torch.compile(dynamic=True), as a workload that compiles that way: its first graph
    #: has symbolic sizes, and the other shapes reuse it
    dynamic: bool = False
    #: one process per ordered pair of the shapes: a workload calling them in any order
    #: finds every graph it compiles (docs/cache-formats.md)
    any_order: bool = False
    #: the input's dims (batch, seq) the workload marks dynamic (torch._dynamo.mark_dynamic)
    mark_dynamic: list[str] = field(default_factory=list)


WarmSpec = TritonWarm | CommandWarm | TorchWarm | VllmWarm
BACKENDS = {TritonWarm: "triton", CommandWarm: "command", TorchWarm: "torch", VllmWarm: "vllm"}


@dataclass
class WarmResult:
    backend: str
    output: Path
    details: dict[str, Any]  # what the backend reports (entries, runs, files...)
    producer: dict[str, Any]
    seconds: float
    tarball: Path | None = None

    @property
    def returncode(self) -> int:
        """The warmed command's exit status (command backend); 0 otherwise."""
        return int(self.details.get("returncode") or 0)

    def to_dict(self) -> dict[str, Any]:
        out = {**self.details, "seconds": self.seconds, "producer": self.producer}
        if self.tarball is not None:
            out["tarball"] = str(self.tarball)
        return out


def warm(
    spec: WarmSpec,
    output: Path,
    *,
    tarball: Path | None = None,
    progress: Progress | None = None,
) -> WarmResult:
    """Warm ``output`` as ``spec`` says, then write its producer record (what built the keys:
    Triton build, Python ABI, ptxas, torch, GPUs), which ``package`` turns into a label;
    ``tarball`` also writes the output, record included, as a .tar.gz."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} is a file; give a directory (-o DIR)")
    backend = BACKENDS.get(type(spec))
    if backend is None:
        raise UsageError(f"not a warm spec: {spec!r}")
    if progress is not None:
        progress(ProgressEvent(f"warming ({backend})", 0, None))
    t0 = time.perf_counter()
    details = _run(spec, output)
    python = getattr(spec, "python", None)
    producer = host_producer()
    if python:  # the record describes the interpreter that compiled, not tcm's
        own = probe_python(python)
        own.gpus, own.targets = producer.gpus, producer.targets
        producer = own
    tcms_child = isinstance(spec, TorchWarm) or (isinstance(spec, CommandWarm) and python)
    if tcms_child and producer.torch_ptxas:  # it compiled with torch's (use_workload_ptxas)
        producer.ptxas = producer.torch_ptxas
    extra: dict[str, Any] = {"backend": backend}
    if isinstance(spec, VllmWarm):
        extra["image"] = spec.image  # the Triton that compiled is the image's, not this host's
    members = details.pop("members", [])
    for m in members:  # a fleet: each GPU's dir says which GPU it was compiled for
        one = dataclasses.replace(producer, gpus=[m.gpu], targets=[m.target])
        write_record(output / m.dir, one, **extra, how=m.how, profile=m.profile)
    if members:
        producer.gpus, producer.targets = [m.gpu for m in members], [m.target for m in members]
        details["gpus"] = [dataclasses.asdict(m) for m in members]
    else:
        write_record(output, producer, **extra)
    if tarball is not None:
        write_tarball(output, tarball)
    return WarmResult(
        backend, output, details, producer.to_dict(), time.perf_counter() - t0, tarball
    )


def _run(spec: WarmSpec, output: Path) -> dict[str, Any]:
    if isinstance(spec, TritonWarm):
        from ..warm.triton_backend import compile_kernelset

        targets = [t if isinstance(t, Target) else Target.parse(t) for t in spec.targets]
        before = {n for n, _s, _e in iter_dirs(output)} if output.is_dir() else set()
        variants, helpers = compile_kernelset(
            spec.kernels, targets, output, python=spec.python, libcuda_dirs=spec.libcuda_dirs
        )
        after = {e.key for e in scan_root(output) if e.kind == "kernel"}
        return {
            "variants": len(variants),
            "new_entries": len(after - before),
            "targets": [str(t) for t in targets],
            "helpers": helpers,
        }
    if isinstance(spec, CommandWarm):
        from ..warm.command_backend import run_command

        return run_command(
            spec.command, output, inductor=spec.inductor, vllm=spec.vllm,
            gpu_profiles=spec.gpu_profiles,
        )  # fmt: skip
    if isinstance(spec, TorchWarm):
        from ..warm.torch_backend import warm_model

        runs, members = warm_model(
            spec.model, output, spec.batch, spec.seq, spec.dtype,
            python=spec.python, gpu_profiles=spec.gpu_profiles, dynamic=spec.dynamic,
            any_order=spec.any_order, mark_dynamic=spec.mark_dynamic,
        )  # fmt: skip
        return {"model": spec.model, "runs": runs, "members": members}
    from ..warm.vllm_backend import run_vllm

    return run_vllm(spec, output)


def write_tarball(output: Path, tarball: Path) -> None:
    """The warmed dir as a .tar.gz, written beside its final name and renamed, so a failure
    leaves no file that looks valid."""
    tarball = Path(tarball)
    with map_os_error("write", tarball):
        fd, tmp = tempfile.mkstemp(prefix=f".{tarball.name}.", dir=tarball.parent or ".")
        try:
            with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
                tar.add(output, arcname=".")
            os.replace(tmp, tarball)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
