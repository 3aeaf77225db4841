"""``tcm warm --backend torch``: torch.compile a transformers model built from a config.

No weights are downloaded: ``AutoModelForCausalLM.from_config`` makes random ones, and kernels
depend on shapes and dtypes, not values (docs/cache-formats.md, "torch.compile"). The output
is the whole Inductor cache (fxgraph, aotautograd, generated code and ``triton/<device>/``):
with only its Triton part warm, a first forward saves little.

Runs as ``python -m tcmtasks.warm.torch_backend`` with ``TORCHINDUCTOR_CACHE_DIR`` set, so that
torch and Inductor start clean in a process of their own. With a GPU profile it compiles for
that GPU without one (gpuless.py): the same program, on FakeTensors.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import fleet
from ..errors import MissingDependency, NoGpu, UsageError
from ..fleet import Member
from ..gpuprofile import find, fleet_mismatch, load_fleet, runtime_of
from ..producer import use_workload_ptxas
from ..resources import model_dir
from ..targets import host_gpus
from .child import child_main, inductor_env, run_child
from .helpers import inductor_helpers, inductor_launches, print_report, split_report

#: the input's dims by name (``--mark-dynamic``)
DIMS = {"batch": 0, "seq": 1}
DTYPES = {
    "fp16": "float16",
    "float16": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp32": "float32",
    "float32": "float32",
}


def warm_model(
    model: str,
    out: Path,
    batches: list[int],
    seqs: list[int],
    dtypes: list[str],
    *,
    python: str | None = None,
    gpu_profiles: list[str | Path] | None = None,
    dynamic: bool = False,
    any_order: bool = False,
    mark_dynamic: list[str] | None = None,
) -> tuple[list[dict[str, Any]], list[Member]]:
    """Compile the model into ``out``: for this machine's GPU; or with ``gpu_profiles``, for
    each GPU of a fleet, into ``out/<gpu>/`` (a fleet dir, tcmtasks/fleet.py): on the GPU
    itself where it is this machine's, else without it, from its profile (gpuless.py).
    ``any_order``: one process per ordered pair of the shapes (batch x seq), each calling
    its two in that order: the graphs a workload calling the shapes in any order compiles
    (docs/cache-formats.md, "Which graphs a process compiles when shapes vary"); else one
    process calls them all, in order; so do ``dynamic`` and ``mark_dynamic`` (``batch``,
    ``seq``: the input's dims the workload marks dynamic), whose one symbolic graph serves
    every shape, unless a size of 1 is among them: then pairs again (``_has_one``). Returns
    the runs' reports and the fleet's members (none without profiles)."""
    cfg = model_dir(model)
    for d in dtypes:
        if d not in DTYPES:
            raise UsageError(f"unknown dtype {d!r}; use fp16, bf16 or fp32")
    profiles = load_fleet(list(gpu_profiles or []))  # bad files are refused before torch starts
    if not profiles:
        for module in ("torch", "transformers"):
            if python is None and importlib.util.find_spec(module) is None:
                raise MissingDependency(f"{module} (the torch warm backend)", "torch")
    args = ["--config", str(cfg), "--batch", ",".join(map(str, batches))]
    args += ["--seq", ",".join(map(str, seqs)), "--dtype", ",".join(dtypes)]
    args += ["--dynamic"] if dynamic else []
    marked = list(mark_dynamic or [])
    unknown = sorted(set(marked) - set(DIMS))
    if unknown:
        raise UsageError(f"--mark-dynamic takes batch and/or seq, not {', '.join(unknown)}")
    args += ["--mark-dynamic", ",".join(marked)] if marked else []
    shapes = [(b, s) for b in batches for s in seqs]
    calls = _processes(shapes, any_order or bool((dynamic or marked) and _has_one(shapes)))
    if not profiles:
        out.mkdir(parents=True, exist_ok=True)
        found, helpers = _run_calls(args, calls, inductor_env(out), "the torch warm", python, set())
        return [{**r, "helpers": helpers} for r in found], []
    local = set(host_gpus()[1])
    # several shapes in one process are fine where every dim that varies is dynamic
    varying = {d for d, n in (("batch", len(batches)), ("seq", len(seqs))) if n > 1}
    several = len(shapes) > 1 and not (dynamic or any_order or varying <= set(marked))
    if several and any(p.name not in local for p in profiles):
        raise UsageError(
            "without a GPU, warm one shape per run (one --batch, one --seq), --dynamic, "
            "--mark-dynamic of the dims that vary, or --any-order (a process per ordered "
            "pair): several shapes in one process recompile with automatic dynamic shapes in "
            "the order given"
        )
    # one line before anything compiles: what the fleet's keys need that this runner lacks
    mismatch = fleet_mismatch(profiles, runtime_of(python), python or sys.executable)
    if mismatch:
        raise UsageError(mismatch)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    members: list[Member] = []
    said: set[str] = set()  # a helper build's failure, said once for the fleet
    for spec, profile in zip(gpu_profiles or [], profiles, strict=True):
        where = out / profile.slug
        env, extra = inductor_env(where), []
        native = profile.name in local
        if not native:  # compiled from the profile: the child must see no GPU at all
            env["CUDA_VISIBLE_DEVICES"] = ""
            extra = ["--gpu-profile", str(find(spec))]
        found, helpers = _run_calls(
            args + extra, calls, env, f"the torch warm for {profile.name}", python, said
        )
        how = "native" if native else "gpu-less"
        runs += [{**r, "gpu": profile.name, "how": how, "helpers": helpers} for r in found]
        members.append(fleet.member(profile, how, spec))
    fleet.write(out, members)
    return runs, members


def _has_one(shapes: list[tuple[int, int]]) -> bool:
    """Whether a size of 1 is among several shapes: torch specialises it even in a dynamic
    graph, and the graph it makes for it depends on whether the symbolic one came first
    (OPT-125m with dynamic=True: 1x128 first and 1x128 after 8x128 are two FX graphs; measured
    on the CPU and the H100, docs/cache-formats.md)."""
    return len(shapes) > 1 and any(1 in shape for shape in shapes)


def _processes(shapes: list[tuple[int, int]], pairs: bool) -> list[list[str]]:
    """The child processes' calls: one process for every shape, in order; or with ``pairs``
    one per ordered pair of them (n shapes, n(n-1) processes), which covers any order."""
    if not pairs or len(shapes) < 2:
        return [[]]
    names = [f"{b}x{s}" for b, s in shapes]
    return [["--shapes", f"{a},{b}"] for a in names for b in names if a != b]


def _run_calls(
    args: list[str],
    calls: list[list[str]],
    env: dict[str, str],
    what: str,
    python: str | None,
    said: set[str],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One child per call (``--any-order``: per ordered pair of shapes), in one Inductor dir:
    their runs' reports, and the last one's helpers (each builds the same, keyed alike)."""
    found: list[dict[str, Any]] = []
    helpers: dict[str, Any] = {}
    for call in calls:
        got, helpers = split_report(
            run_child("tcmtasks.warm.torch_backend", args + call, env, what=what, python=python),
            said=said,
        )
        found += got
    return found, helpers


@dataclass(frozen=True)
class Calls:
    """The workload's program as the child replays it: the calls it makes (input shapes, in
    order, per dtype) and how it compiles (``dynamic=True``, dims it marks dynamic)."""

    shapes: list[tuple[int, int]]
    dtypes: list[str]
    dynamic: bool = False
    marked: tuple[int, ...] = ()  # the input_ids dims passed to mark_dynamic

    def compile(self, torch: Any, model: Any) -> Any:
        return torch.compile(model, dynamic=True if self.dynamic else None)

    def mark(self, torch: Any, ids: Any) -> Any:
        for dim in self.marked:
            torch._dynamo.mark_dynamic(ids, dim)
        return ids


def _child(config: str, calls: Calls, gpu_profile: str | None = None) -> None:
    try:
        import torch

        if gpu_profile is not None:  # an unusable torch build is named before anything else
            from . import gpuless

            gpuless.check_supported(str(torch.__version__), torch.version.cuda)
        import transformers
    except ImportError as exc:
        raise MissingDependency(f"{exc.name} (the torch warm backend)", "torch") from None
    if gpu_profile is not None:
        _child_without_gpu(torch, transformers, config, calls, gpu_profile)
        return
    if not torch.cuda.is_available():
        raise NoGpu(
            "the torch backend compiles for the GPU it runs on: no CUDA/ROCm GPU "
            "is visible here (use --backend triton on CPU-only machines)"
        )
    cfg = _config(transformers, config)
    if "bf16" in calls.dtypes and not torch.cuda.is_bf16_supported():
        raise UsageError(f"{torch.cuda.get_device_name()} has no bfloat16: warm with --dtype fp16")
    with inductor_launches() as launched:
        _compile_on_gpu(torch, transformers, cfg, calls)
    print_report(inductor_helpers(launched))


def _config(transformers: Any, config: str) -> Any:
    """The model's config, or one line on what this transformers cannot build from it."""
    try:
        return transformers.AutoConfig.from_pretrained(config)
    except (ValueError, KeyError):
        kind = _model_type(config)
        raise UsageError(
            f"transformers {transformers.__version__} does not know the model type {kind!r} "
            f"of {config}: use an interpreter whose transformers has it (--python), or a "
            "config of an architecture it knows"
        ) from None


def _model_type(config: str) -> str:
    try:
        with open(os.path.join(config, "config.json")) as f:
            return str(json.load(f).get("model_type"))
    except (OSError, ValueError, AttributeError):
        return "?"


def _model(transformers: Any, cfg: Any) -> Any:
    """A causal LM of ``cfg``, or one line on why transformers builds none."""
    try:
        return transformers.AutoModelForCausalLM.from_config(cfg)
    except ValueError as exc:  # "Unrecognized configuration class ... for AutoModelForCausalLM"
        raise UsageError(
            f"transformers {transformers.__version__} has no causal LM for "
            f"{type(cfg).__name__} ({cfg.model_type}): tcm warms causal LMs "
            f"({str(exc).splitlines()[0][:120]})"
        ) from None


def _compile_on_gpu(torch: Any, transformers: Any, cfg: Any, calls: Calls) -> None:
    for dtype_name in calls.dtypes:
        dtype = getattr(torch, DTYPES[dtype_name])
        model = _model(transformers, cfg).to("cuda", dtype).eval()
        compiled = calls.compile(torch, model)
        for b, s in calls.shapes:
            ids = calls.mark(torch, torch.randint(0, cfg.vocab_size, (b, s), device="cuda"))
            torch.cuda.synchronize()
            t = time.perf_counter()
            with torch.no_grad():
                compiled(input_ids=ids)
            torch.cuda.synchronize()
            print(
                json.dumps(
                    {
                        "dtype": dtype_name,
                        "batch": b,
                        "seq": s,
                        "first_forward_s": time.perf_counter() - t,
                    }
                ),
                flush=True,
            )


def _child_without_gpu(
    torch: Any, transformers: Any, config: str, calls: Calls, profile_path: str
) -> None:
    """The GPU warm's program, for the profile's GPU, on FakeTensors (gpuless.py)."""
    from torch._dynamo.utils import counters
    from torch._subclasses.fake_tensor import FakeTensorMode

    from . import gpuless

    profile = gpuless.profile_to_replay(torch, profile_path)  # torch was checked by _child
    cfg = _config(transformers, config)
    if "bf16" in calls.dtypes and tuple(profile.capability) < (8, 0):
        raise UsageError(f"{profile.label} has no bfloat16: warm with --dtype fp16")
    settings = gpuless.settings_to_replay(profile)
    with gpuless.patched(profile), inductor_launches() as launched:
        for dtype_name in calls.dtypes:
            dtype = getattr(torch, DTYPES[dtype_name])
            with torch.device("meta"):
                model = _model(transformers, cfg)
            model = model.to(dtype).eval()
            mode = FakeTensorMode()
            gpuless.fake_module(torch, model, mode)
            compiled = calls.compile(torch, model)
            for b, s in calls.shapes:
                with mode:
                    ids = torch.randint(0, cfg.vocab_size, (b, s), device="cuda")
                    calls.mark(torch, ids)
                counters.clear()
                t = time.perf_counter()
                # under the fake mode: code Dynamo leaves to eager (transformers 5.25's
                # Llama: torch.arange(..., device=inputs_embeds.device) for position ids,
                # modeling_llama.py:379) makes fake tensors instead of initialising CUDA
                with torch.no_grad(), mode, gpuless.errors_unwrapped():
                    compiled(input_ids=ids)
                seen = {k: dict(v) for k, v in counters.items()}
                print(
                    json.dumps(
                        {
                            "dtype": dtype_name,
                            "batch": b,
                            "seq": s,
                            "gpu": profile.label,
                            "settings": {k: str(v) for k, v in settings.items()},
                            "compile_s": time.perf_counter() - t,
                            "fx_graphs": seen.get("inductor", {}).get("fxgraph_cache_miss", 0),
                            "aot_graphs": seen.get("aot_autograd", {}).get(
                                "autograd_cache_saved", 0
                            ),
                        }
                    ),
                    flush=True,
                )
        report = inductor_helpers(launched, profile.libcuda_dirs)
    print_report(report)


def main() -> None:
    # before torch or Triton read a ptxas: Inductor would set the same, but only on some of its
    # paths, and a cold compile then keys with Triton's own ptxas while the workload's FX-graph
    # hit looks up with torch's (producer.use_workload_ptxas)
    use_workload_ptxas()
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", default="1")
    ap.add_argument("--seq", default="128")
    ap.add_argument("--dtype", default="fp16")
    ap.add_argument("--gpu-profile")
    ap.add_argument("--dynamic", action="store_true")
    ap.add_argument("--mark-dynamic", default="", help="batch,seq: the dims to mark dynamic")
    ap.add_argument("--shapes", help="BxS,BxS...: these calls in this order (not the product)")
    a = ap.parse_args()
    calls = Calls(
        _shapes(a.shapes)
        if a.shapes
        else [(int(b), int(s)) for b in a.batch.split(",") for s in a.seq.split(",")],
        a.dtype.split(","),
        a.dynamic,
        tuple(DIMS[d] for d in a.mark_dynamic.split(",") if d),
    )
    child_main(lambda: _child(a.config, calls, a.gpu_profile))


def _shapes(text: str) -> list[tuple[int, int]]:
    return [(int(b), int(s)) for b, s in (x.split("x") for x in text.split(","))]


if __name__ == "__main__":
    main()
