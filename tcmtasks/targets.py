"""GPU targets: the (backend, arch, warp size) triple that decides whether a kernel can load."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import UsageError

#: Accepted spellings of a backend; ``rocm`` is what users say, ``hip`` is what Triton writes.
BACKEND_ALIASES = {"cuda": "cuda", "nvidia": "cuda", "hip": "hip", "rocm": "hip", "amd": "hip"}
DEFAULT_WARP_SIZE = {"cuda": 32, "hip": 64}


def normalize_backend(name: str) -> str:
    """Return Triton's name for a backend (``rocm`` -> ``hip``); raise on unknown names."""
    key = name.strip().lower()
    if key not in BACKEND_ALIASES:
        known = ", ".join(sorted(BACKEND_ALIASES))
        raise UsageError(f"unknown backend {name!r}; use one of: {known}")
    return BACKEND_ALIASES[key]


def normalize_arch(arch: str | int) -> str:
    """Canonical arch string: CUDA ``90`` (from 90, "90", "sm90", "sm_90"), HIP ``gfx942``."""
    text = str(arch).strip().lower()
    m = re.fullmatch(r"(?:sm_?|compute_?)?(\d+)a?", text)
    if m:
        return m.group(1)
    return text


@dataclass(frozen=True, order=True)
class Target:
    """A compilation target as Triton's ``GPUTarget`` records it in metadata."""

    backend: str
    arch: str
    warp_size: int

    @classmethod
    def parse(cls, text: str) -> Target:
        """Parse ``cuda:90``, ``rocm:gfx942`` or ``hip:gfx90a:64`` (warp size optional)."""
        parts = text.strip().split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(
                f"bad target {text!r}; write BACKEND:ARCH[:WARP], e.g. cuda:90, hip:gfx942"
            )
        backend = normalize_backend(parts[0])
        arch = normalize_arch(parts[1])
        if backend == "cuda" and not arch.isdigit():
            raise UsageError(f"bad CUDA arch {parts[1]!r} in {text!r}; write e.g. cuda:90")
        if backend == "hip" and not arch.startswith("gfx"):
            raise UsageError(f"bad HIP arch {parts[1]!r} in {text!r}; write e.g. hip:gfx942")
        if len(parts) == 3:
            try:
                warp = int(parts[2])
            except ValueError:
                raise UsageError(f"bad warp size {parts[2]!r} in {text!r}") from None
        else:
            warp = DEFAULT_WARP_SIZE[backend]
        return cls(backend, arch, warp)

    @classmethod
    def from_metadata(cls, target: object) -> Target | None:
        """Build from metadata's ``target`` dict (arch is an int for CUDA, a str for HIP)."""
        if not isinstance(target, dict):
            return None
        backend = target.get("backend")
        arch = target.get("arch")
        if not isinstance(backend, str) or arch is None:
            return None
        backend = BACKEND_ALIASES.get(backend.lower(), backend.lower())
        warp = target.get("warp_size")
        if not isinstance(warp, int):
            warp = DEFAULT_WARP_SIZE.get(backend, 0)
        return cls(backend, normalize_arch(arch), warp)

    def __str__(self) -> str:
        if self.warp_size == DEFAULT_WARP_SIZE.get(self.backend):
            return f"{self.backend}:{self.arch}"
        return f"{self.backend}:{self.arch}:{self.warp_size}"


# -- the host's GPUs ------------------------------------------------------------------------------

KFD_NODES = "/sys/class/kfd/kfd/topology/nodes"


def gfx_name(gfx_target_version: int) -> str:
    """KFD's ``gfx_target_version`` (major*10000 + minor*100 + stepping) -> ``gfx942``,
    ``gfx90a`` (the stepping is a hex digit)."""
    major, rest = divmod(int(gfx_target_version), 10000)
    minor, stepping = divmod(rest, 100)
    return f"gfx{major}{minor:x}{stepping:x}"


def hip_warp_size(arch: str) -> int:
    """CDNA (gfx9) runs 64-wide waves; RDNA (gfx10+) kernels run 32-wide under Triton."""
    return 64 if arch.startswith("gfx9") else 32


def _nvml_targets() -> tuple[list[Target], list[str]]:
    try:
        import pynvml
    except ImportError:
        return [], []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return [], []
    try:
        targets, names = [], []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            targets.append(Target("cuda", f"{major}{minor}", 32))
            name = pynvml.nvmlDeviceGetName(h)
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return targets, names
    finally:
        pynvml.nvmlShutdown()


def _amd_targets(kfd_nodes: str = KFD_NODES) -> tuple[list[Target], list[str]]:
    try:
        import amdsmi

        amdsmi.amdsmi_init()
        try:
            targets, names = [], []
            for h in amdsmi.amdsmi_get_processor_handles():
                info = amdsmi.amdsmi_get_gpu_asic_info(h)
                arch = str(info.get("target_graphics_version", "")).lower()
                if arch.startswith("gfx"):
                    targets.append(Target("hip", arch, hip_warp_size(arch)))
                    names.append(str(info.get("market_name", arch)))
            return targets, names
        finally:
            amdsmi.amdsmi_shut_down()
    except Exception:
        pass
    targets, names = [], []
    try:
        nodes = sorted(os.listdir(kfd_nodes))
    except OSError:
        return [], []
    for node in nodes:
        try:
            with open(os.path.join(kfd_nodes, node, "properties")) as f:
                text = f.read()
        except OSError:
            continue
        m = re.search(r"^gfx_target_version\s+(\d+)", text, re.M)
        if m and int(m.group(1)) > 0:  # CPU nodes report 0
            arch = gfx_name(int(m.group(1)))
            targets.append(Target("hip", arch, hip_warp_size(arch)))
            names.append(arch)
    return targets, names


def host_devices(kfd_nodes: str = KFD_NODES) -> tuple[list[Target], list[str]]:
    """Every GPU of this machine (NVIDIA via nvidia-ml-py; AMD via amdsmi, else the KFD sysfs
    topology): its target and its device name, one pair per device."""
    targets, names = _nvml_targets()
    amd, amd_names = _amd_targets(kfd_nodes)
    return targets + amd, names + amd_names


def host_targets(kfd_nodes: str = KFD_NODES) -> tuple[list[Target], list[str]]:
    """The GPU targets of this machine, each once, paired with the names of its own devices
    for display ("NVIDIA H200 x2"; two kinds of device on one target: both names)."""
    return pair_devices(*host_devices(kfd_nodes))


def host_gpus(kfd_nodes: str = KFD_NODES) -> tuple[list[Target], list[str]]:
    """Each kind of GPU of this machine once: (targets, device names) in one order. The names
    are the devices' own ("NVIDIA H200", as torch reports it too): Inductor's keys hold them,
    so they, not display names, decide which GPU's units of an image a node installs."""
    return distinct_devices(*host_devices(kfd_nodes))


def distinct_devices(targets: list[Target], names: list[str]) -> tuple[list[Target], list[str]]:
    seen: dict[str, Target] = {}
    for t, n in zip(targets, names, strict=True):
        seen.setdefault(n, t)
    return list(seen.values()), list(seen)


def pair_devices(targets: list[Target], names: list[str]) -> tuple[list[Target], list[str]]:
    """One entry per distinct target, named after the devices that have it."""
    by_target: dict[Target, dict[str, int]] = {}
    for t, n in zip(targets, names, strict=True):
        counts = by_target.setdefault(t, {})
        counts[n] = counts.get(n, 0) + 1
    return list(by_target), [
        ", ".join(f"{n} x{c}" if c > 1 else n for n, c in counts.items())
        for counts in by_target.values()
    ]
