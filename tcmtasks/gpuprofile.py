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
    recorded_by: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} (sm_{self.capability[0]}{self.capability[1]}, torch {self.torch})"

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
                recorded_by=str(data.get("recorded_by") or ""),
            )
        except (TypeError, ValueError, IndexError, KeyError, UsageError) as exc:
            raise UsageError(f"{source}: malformed GPU profile ({exc})") from None


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
    dtype: str, head_dim: int, mask: str, causal: bool, grad: bool, dropout: bool, square: bool
) -> str:
    """The attention case a choice was recorded for (see ``record_sdp_choices``)."""
    return "|".join(
        [dtype, str(head_dim), mask, *("1" if x else "0" for x in (causal, grad, dropout, square))]
    )


def runtime_mismatch(
    profile: GpuProfile,
    torch: str | None,
    triton: str | None,
    python: str,
    triton_key: str | None = None,
    libraries: dict[str, str | None] | None = None,
    ptxas: str | None = None,
) -> str | None:
    """The first difference between the profile's runtime and the producer's, as one line
    for the user, or None. Any difference changes every key."""
    for what, theirs, ours in (
        ("torch", profile.torch, torch),
        ("Triton", profile.triton, triton),
        ("Python", profile.python, python),
    ):
        if theirs != ours:
            return (
                f"the GPU profile was recorded with {what} {theirs}, this interpreter has "
                f"{what} {ours or 'none'}: every key would miss on the GPU; warm with the "
                f"node's build (--python PATH to an interpreter that has it)"
            )
    for name, ours_lib in (libraries or {}).items():
        theirs_lib = profile.libraries.get(name)
        if theirs_lib and theirs_lib != ours_lib:
            return (
                f"the GPU profile was recorded with {name} {theirs_lib}, this interpreter has "
                f"{name} {ours_lib or 'none'}: the model's code is the graph, so another "
                f"version can trace another graph and miss; install {name}=={theirs_lib}"
            )
    if profile.triton_key and triton_key and profile.triton_key != triton_key:
        return (
            f"the GPU profile's Triton {profile.triton} is another build than this one "
            f"(triton_key {profile.triton_key} vs {triton_key}): every kernel key would "
            f"miss; install the node's Triton wheel"
        )
    if profile.ptxas and ptxas and profile.ptxas != ptxas:
        return (
            f"the GPU profile's torch compiles with ptxas {profile.ptxas}, this interpreter's "
            f"with {ptxas}: every kernel key would miss; use the node's torch build, or set "
            f"TRITON_PTXAS_PATH to a ptxas {profile.ptxas}"
        )
    return None
