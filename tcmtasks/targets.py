"""GPU targets: the (backend, arch, warp size) triple that decides whether a kernel can load."""

from __future__ import annotations

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
