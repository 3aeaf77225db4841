"""GPU profiles: what a torch.compile for one GPU asks of that GPU, recorded once where it is.

A profile lets a machine without the GPU (a CI runner) compile for it: Inductor's FX-graph key
hashes the device's properties (name included) and its CUDA and Triton builds, codegen asks the
compute capability and Triton's target, and the attention kernel torch picks depends on the
GPU. ``tcm gpu --save-profile`` records all of it on the GPU, in the workload's interpreter;
``tcm warm --backend torch --gpu-profile`` replays it (tcmtasks/warm/gpuless.py).

The profile also names the runtime it was recorded under (torch build, Triton, Python ABI):
the keys hash them, so a producer with any other build would write entries that every lookup
misses. :func:`runtime_mismatch` says so before any work is done.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .targets import Target

FORMAT = 1
#: Attention choices are recorded for these head dims; other dims are refused at warm time.
SDP_HEAD_DIMS = (32, 64, 80, 96, 128, 160, 192, 256)
SDP_DTYPES = ("float16", "bfloat16", "float32")
SDP_MASKS = ("none", "bool", "float")


@dataclass
class GpuProfile:
    """One GPU as torch and Triton see it, and the runtime that saw it."""

    name: str  # "NVIDIA H200": part of Inductor's key
    capability: tuple[int, int]
    props: dict[str, Any]  # torch.cuda.get_device_properties, every plain attribute
    arch_list: list[str]
    triton_target: Target
    triton_props: dict[str, Any]  # triton driver.active.utils.get_device_properties(0)
    torch: str  # torch.__version__, local part included ("2.11.0+cu130")
    torch_cuda: str | None
    triton: str | None
    python: str  # "cp312"
    triton_key: str | None = None  # tcm's hash of triton_key(): equal builds, equal hash
    #: the ptxas Inductor compiles with there (torch's own where its build ships one): in every key
    ptxas: str | None = None
    #: the model library's version ({"transformers": "5.17.0"}): its code is the graph, so
    #: another version can trace another graph (seen: OPT's attention mask, 5.17 vs 5.24)
    libraries: dict[str, str] = field(default_factory=dict)
    #: "dtype|head_dim|mask|causal|grad|dropout|square" -> torch's SDPBackend name
    sdp_choices: dict[str, str] = field(default_factory=dict)
    #: Inductor's settings as its FX-graph and AOTAutograd keys hash them
    #: (``config.save_config_portable``), JSON-normalised. Some come from the machine's
    #: environment at import (``cpp.cxx`` from ``$CXX``): a runner that differs in one of
    #: them writes keys the GPU never looks up (seen: ``CXX=/opt/gcc/bin/g++`` on the GPU
    #: machines, ``g++`` on the runner). Empty in profiles recorded before this field.
    inductor_config: dict[str, Any] = field(default_factory=dict)
    #: where the GPU machine's ``libcuda.so.1`` is (its Triton's ``libcuda_dirs()``): Triton
    #: 3.8+ hashes that dir into its C helpers' keys (warm/helpers.py)
    libcuda_dirs: list[str] = field(default_factory=list)
    recorded_by: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} (sm_{self.capability[0]}{self.capability[1]}, torch {self.torch})"

    @property
    def slug(self) -> str:
        """The GPU's name as a dir name: ``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
        return slug(self.name)

    @property
    def runtime(self) -> WarmRuntime:
        return WarmRuntime(
            self.torch, self.triton, self.python, self.triton_key, self.ptxas,
            dict(self.libraries),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["format"] = FORMAT
        out["capability"] = list(self.capability)
        out["triton_target"] = str(self.triton_target)
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "profile") -> GpuProfile:
        if not isinstance(data, dict):
            raise UsageError(f"{source}: not a GPU profile (a JSON object is expected)")
        if "format" not in data:
            raise UsageError(
                f"{source}: not a GPU profile (no format field; `tcm gpu --save-profile FILE` "
                "writes one)"
            )
        if data.get("format") != FORMAT:
            raise UsageError(
                f"{source}: GPU profile format {data.get('format')!r}, this tcm reads "
                f"format {FORMAT}: record it again with `tcm gpu --save-profile`"
            )
        missing = [k for k in ("name", "capability", "props", "triton_target", "torch",
                               "python") if k not in data]  # fmt: skip
        if missing:
            raise UsageError(f"{source}: GPU profile lacks {', '.join(missing)}")
        try:
            cap = data["capability"]
            return cls(
                name=str(data["name"]),
                capability=(int(cap[0]), int(cap[1])),
                props=dict(data["props"]),
                arch_list=[str(x) for x in data.get("arch_list") or []],
                triton_target=Target.parse(str(data["triton_target"])),
                triton_props=dict(data.get("triton_props") or {}),
                torch=str(data["torch"]),
                torch_cuda=data.get("torch_cuda"),
                triton=data.get("triton"),
                python=str(data["python"]),
                triton_key=data.get("triton_key"),
                ptxas=data.get("ptxas"),
                libraries={str(k): str(v) for k, v in (data.get("libraries") or {}).items()},
                sdp_choices={str(k): str(v) for k, v in (data.get("sdp_choices") or {}).items()},
                inductor_config=dict(data.get("inductor_config") or {}),
                libcuda_dirs=[str(d) for d in data.get("libcuda_dirs") or []],
                recorded_by=str(data.get("recorded_by") or ""),
            )
        except (TypeError, ValueError, IndexError, KeyError, UsageError) as exc:
            raise UsageError(f"{source}: malformed GPU profile ({exc})") from None


@dataclass(frozen=True)
class WarmRuntime:
    """What a producer must run for its keys to equal a node's: torch's build, Triton's,
    the Python ABI, the ptxas Inductor compiles with and the model library's version."""

    torch: str | None
    triton: str | None
    python: str | None
    triton_key: str | None = None
    ptxas: str | None = None
    libraries: dict[str, str] = field(default_factory=dict)

    def describe(self, other: WarmRuntime | None = None) -> str:
        """One phrase; the Triton build's hash only where ``other`` has the same version of
        another build (else it says nothing the version does not)."""
        triton = f"Triton {self.triton or 'none'}"
        if (
            other is not None
            and other.triton == self.triton
            and _differ(self.triton_key, other.triton_key)
        ):
            triton += f" (build {self.triton_key})"
        out = [f"torch {self.torch or 'none'}", triton, f"Python {self.python or '?'}"]
        out += [f"{k} {v or 'none'}" for k, v in sorted(self.libraries.items())]
        if self.ptxas or (other is not None and other.ptxas):
            out.append(f"ptxas {self.ptxas or 'none'}")
        return ", ".join(out)


#: The model libraries a profile records (their code is the traced graph).
LIBRARIES = ("transformers",)


def runtime_here() -> WarmRuntime:
    """This interpreter's runtime, without importing torch (seconds): torch's own version
    file (``2.11.0+cu130``; a PyPI wheel's metadata says ``2.11.0``), Triton's build from
    ``detect``, and the ptxas a torch warm compiles with (torch's where its build ships one)."""
    import importlib.metadata

    from .producer import detect

    d = detect()
    libraries = {}
    for name in LIBRARIES:
        try:
            libraries[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            libraries[name] = ""
    return WarmRuntime(
        d.torch, d.triton_version, d.python, d.triton_key, d.torch_ptxas or d.ptxas, libraries
    )


def runtime_of(python: str | None) -> WarmRuntime:
    """``runtime_here`` of another interpreter (``--python``), asked in a subprocess."""
    if python is None:
        return runtime_here()
    import dataclasses

    from .runtime import ask

    data = ask(python, (
        "import dataclasses, json; from tcmtasks.gpuprofile import runtime_here; "
        "print(json.dumps(dataclasses.asdict(runtime_here())))"
    ))  # fmt: skip
    if not isinstance(data, dict):
        raise UsageError(f"--python {python}: it gave no description")
    fields = {f.name for f in dataclasses.fields(WarmRuntime)}
    return WarmRuntime(**{k: v for k, v in data.items() if k in fields})


def _differ(a: str | None, b: str | None) -> bool:
    return bool(a and b and a != b)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def shipped() -> dict[str, Path]:
    """The profiles that ship with tcm (``tcmtasks/data/gpu-profiles``): name -> file."""
    from .resources import data_dir

    root = data_dir() / "gpu-profiles"
    return {p.stem: p for p in sorted(root.glob("*.json"))}


def find(spec: str | Path, *, base: Path | None = None) -> Path:
    """A profile given as a file (as given, or relative to ``base``, a recipe's dir), or the
    name of one tcm ships (``nvidia-h100``)."""
    for candidate in (Path(spec), *([base / spec] if base is not None else [])):
        if candidate.expanduser().is_file():
            return candidate.expanduser().resolve()
    known = shipped()
    if str(spec) in known:
        return known[str(spec)]
    raise UsageError(
        f"no GPU profile {str(spec)!r}: not a file, and tcm ships {', '.join(known)} "
        "(record another on the GPU with `tcm gpu --save-profile FILE`)"
    )


def load_fleet(specs: list[str | Path], *, base: Path | None = None) -> list[GpuProfile]:
    """The profiles of a fleet, each GPU once: a GPU named twice would give an image two
    answers for one device name (and with two runtimes, one of them would miss)."""
    fleet: dict[str, tuple[str, GpuProfile]] = {}
    for spec in specs:
        profile = load(find(spec, base=base))
        if profile.name in fleet:
            first, other = fleet[profile.name]
            same = other.runtime == profile.runtime
            raise UsageError(
                f"GPU profiles {first} and {spec} both describe {profile.name}"
                + (
                    ": name it once"
                    if same
                    else f", with different runtimes ({other.runtime.describe()} vs "
                    f"{profile.runtime.describe()}): a node of one GPU runs one runtime; warm "
                    "each runtime in a recipe of its own"
                )
            )
        fleet[profile.name] = (str(spec), profile)
    return [p for _spec, p in fleet.values()]


def fleet_mismatch(profiles: list[GpuProfile], have: WarmRuntime, where: str) -> str | None:
    """Why the producer ``where`` (an interpreter with runtime ``have``) cannot warm for every
    profile, as one line naming what they need and what it has; None when it can."""
    needs: dict[str, list[GpuProfile]] = {}
    for p in profiles:  # grouped by what they need (a WarmRuntime holds a dict: no hash)
        needs.setdefault(json.dumps(asdict(p.runtime), sort_keys=True), []).append(p)
    if len(needs) > 1:
        each = "; ".join(
            f"{', '.join(p.name for p in ps)} need {ps[0].runtime.describe()}"
            for ps in needs.values()
        )
        return (
            f"the GPU profiles name different runtimes ({each}): one warm compiles with one "
            "interpreter; warm each runtime's GPUs in a run (or recipe) of their own"
        )
    if all(runtime_mismatch(p, have) is None for p in profiles):
        return None
    need = profiles[0].runtime
    return (
        f"this runner cannot warm for {', '.join(p.name for p in profiles)}: "
        f"{'they need' if len(profiles) > 1 else 'it needs'} {need.describe(have)}; {where} "
        f"has {have.describe(need)}. Warm with an interpreter that has their runtime "
        "(--python PATH, or python: in the recipe), or record profiles for this runtime with "
        "`tcm gpu --save-profile FILE` on a node that runs it"
    )


def load(path: Path | str) -> GpuProfile:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read GPU profile {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON ({exc})") from None
    return GpuProfile.from_dict(data, str(path))


def save(profile: GpuProfile, path: Path | str) -> Path:
    """Written whole or not at all (temp file + rename): a team checks these in."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(profile.to_dict(), indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def sdp_key(
    dtype: str,
    head_dim: int,
    mask: str,
    causal: bool,
    grad: bool,
    dropout: bool,
    square: bool,
    gqa: bool = False,
) -> str:
    """The attention case a choice was recorded for (see ``record_sdp_choices``).
    ``gqa``: grouped-query attention (``enable_gqa``, fewer key/value heads than query
    heads), marked by a suffix so that profiles recorded before it keep their keys."""
    flags = ("1" if x else "0" for x in (causal, grad, dropout, square))
    return "|".join([dtype, str(head_dim), mask, *flags, *(["gqa"] if gqa else [])])


def runtime_mismatch(profile: GpuProfile, have: WarmRuntime) -> str | None:
    """The first difference between the profile's runtime and the producer's, as one line
    for the user, or None. Any difference changes every key."""
    for what, theirs, ours in (
        ("torch", profile.torch, have.torch),
        ("Triton", profile.triton, have.triton),
        ("Python", profile.python, have.python),
    ):
        if theirs != ours:
            return (
                f"the GPU profile was recorded with {what} {theirs}, this interpreter has "
                f"{what} {ours or 'none'}: every key would miss on the GPU; warm with the "
                f"node's build (--python PATH to an interpreter that has it)"
            )
    for name, theirs_lib in profile.libraries.items():
        ours_lib = have.libraries.get(name)
        if theirs_lib != ours_lib:
            return (
                f"the GPU profile was recorded with {name} {theirs_lib}, this interpreter has "
                f"{name} {ours_lib or 'none'}: the model's code is the graph, so another "
                f"version can trace another graph and miss; install {name}=={theirs_lib}"
            )
    if _differ(profile.triton_key, have.triton_key):
        return (
            f"the GPU profile's Triton {profile.triton} is another build than this one "
            f"(triton_key {profile.triton_key} vs {have.triton_key}): every kernel key would "
            f"miss; install the node's Triton wheel"
        )
    if _differ(profile.ptxas, have.ptxas):
        return (
            f"the GPU profile's torch compiles with ptxas {profile.ptxas}, this interpreter's "
            f"with {have.ptxas}: every kernel key would miss; use the node's torch build, or set "
            f"TRITON_PTXAS_PATH to a ptxas {profile.ptxas}"
        )
    return None
