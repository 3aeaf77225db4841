"""``tcm warm``: parse the options into one backend's spec and call ``ops.warm``."""

# Annotations stay live objects here (no ``from __future__ import annotations``): typer would
# otherwise compile and eval every option's annotation string when tcm starts, 13 ms a run.
# Helpers annotated with lazily loaded names (ops.*) quote them.

from pathlib import Path
from typing import Annotated

import typer

from .. import ops
from ..errors import UsageError
from .app import app
from .common import JsonOpt, err, esc, out, print_json, progress_bars, targets


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(
            f"{option} takes whole numbers separated by commas, not {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise UsageError(f"{option} takes positive whole numbers, not {text!r}")
    return values


@app.command("warm", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def warm_cmd(
    command: Annotated[
        list[str] | None, typer.Argument(help="command backend: the command, after --")
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="triton (no GPU), command, torch (a GPU, or GPU profiles) or vllm (container)."
        ),
    ] = "triton",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            "--host-cache-dir",
            help="Output dir (the cache, or the vLLM cache mounted in the container).",
        ),
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", help="triton: targets, comma-separated or repeated."),
    ] = None,
    kernels: Annotated[
        str | None,
        typer.Option(
            help="triton: kernel set: a file, a module, or one shipped with tcm (tutorials)."
        ),
    ] = None,
    libcuda_dir: Annotated[
        list[str] | None,
        typer.Option(
            "--libcuda-dir",
            metavar="DIR",
            help="triton: the dirs the nodes' Triton lists for libcuda.so.1 (its "
            "libcuda_dirs(): ldconfig's, in order), repeated. Triton 3.8+ hashes them into "
            "its C helpers' keys: without them those are not built.",
        ),
    ] = None,
    inductor: Annotated[
        bool,
        typer.Option(
            help="command: the output is the command's whole Inductor cache "
            "(TORCHINDUCTOR_CACHE_DIR=OUTPUT; Triton's kernels in OUTPUT/triton/<device>)."
        ),
    ] = False,
    vllm_cache: Annotated[
        bool,
        typer.Option(
            "--vllm-cache",
            help="command: the output is the command's vLLM cache root (VLLM_CACHE_ROOT=OUTPUT).",
        ),
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(
            help="torch: a dir with config.json, or a model shipped with tcm (opt-125m); "
            "vllm: the model to serve."
        ),
    ] = None,
    batch: Annotated[str, typer.Option(help="torch: batch sizes, comma-separated.")] = "1",
    seq: Annotated[str, typer.Option(help="torch: sequence lengths, comma-separated.")] = "128",
    dtype: Annotated[str, typer.Option(help="torch: dtypes (fp16, bf16, fp32).")] = "fp16",
    dynamic: Annotated[
        bool,
        typer.Option(
            "--dynamic",
            help="torch: compile with torch.compile(dynamic=True), as a workload that does: "
            "one graph with symbolic sizes serves the shapes, in one process. A size of 1 is "
            "still its own graph, which depends on the order: with one among the shapes, a "
            "process per ordered pair, as --any-order.",
        ),
    ] = False,
    any_order: Annotated[
        bool,
        typer.Option(
            "--any-order",
            help="torch: warm each ordered pair of the shapes in a process of its own, so that "
            "a workload calling them in any order (and, after one of them, any shape between) "
            "compiles nothing; n shapes take n(n-1) processes.",
        ),
    ] = False,
    mark_dynamic: Annotated[
        str | None,
        typer.Option(
            "--mark-dynamic",
            metavar="DIMS",
            help="torch: batch, seq or batch,seq: the input's dims the workload marks dynamic "
            "(torch._dynamo.mark_dynamic); its first graph then has symbolic sizes there. "
            "Without a GPU, shapes that vary only in marked dims warm in one run.",
        ),
    ] = None,
    gpu_profile: Annotated[
        list[str] | None,
        typer.Option(
            metavar="FILE|NAME",
            help="torch, command: compile for the GPU a profile describes, repeated for a fleet "
            "(one dir per GPU in the output, one image later): a file from tcm gpu "
            "--save-profile or a profile tcm ships (tcm gpu --profiles). Without that GPU here, "
            "compiled without it; needs the profiles' torch build, Triton, Python and "
            "transformers. command: the command is then the workload's python warmup.py "
            "(or python -m MODULE), run by tcm inside its replay of the GPU.",
        ),
    ] = None,
    image: Annotated[str, typer.Option(help="vllm: container image.")] = (
        "docker.io/vllm/vllm-openai:latest"
    ),
    engine: Annotated[str, typer.Option(help="vllm: podman or docker.")] = "podman",
    hf_token_file: Annotated[
        Path | None,
        typer.Option(
            help="vllm: file holding the Hugging Face token (else HF_TOKEN); never printed."
        ),
    ] = None,
    container_cache_dir: Annotated[
        str, typer.Option(help="vllm: cache dir inside the container.")
    ] = "/root/.cache/vllm",
    rocm: Annotated[bool, typer.Option(help="vllm: pass AMD GPUs (/dev/kfd, /dev/dri).")] = False,
    no_gpu: Annotated[bool, typer.Option("--no-gpu", help="vllm: pass no GPU.")] = False,
    timeout: Annotated[
        float, typer.Option(help="vllm: seconds before the container is killed.")
    ] = 3600.0,
    python: Annotated[
        str | None,
        typer.Option(
            "--python",
            help="triton, torch: compile with this interpreter (the workload's Python and "
            "Triton: keys depend on both); it needs tcm's dependencies importable.",
        ),
    ] = None,
    tarball: Annotated[
        Path | None, typer.Option(help="Also write the output as a .tar.gz.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Warm a cache for a kernel set or a model.

    Backends: triton compiles a kernel set for named GPUs without one (keys match real
    launches); command runs any command against the output; torch runs torch.compile of a
    transformers model from a config on this GPU, or with --gpu-profile for that GPU on a
    machine without one; vllm runs vLLM in a container. Every warm
    writes a producer record (.tcm-producer.json) that tcm package puts in the image labels.

    Examples: tcm warm --backend triton --kernels tutorials --target cuda:90 -o build/cache;
    tcm warm --backend command --inductor -o build/inductor -- python train.py;
    tcm warm --backend command --gpu-profile nvidia-h100 -o build/mine -- python warmup.py
    (the workload's own warm-up script, for an H100, on a machine without one);
    tcm warm --backend torch --model opt-125m --gpu-profile nvidia-h100 --gpu-profile
    nvidia-h200 -o build/opt (a CPU-only CI runner with the nodes' runtime)
    """
    if output is None:
        raise UsageError("give the output dir: -o DIR")
    if gpu_profile and backend not in ("torch", "command"):
        raise UsageError("--gpu-profile is for the torch and command backends")
    if libcuda_dir and backend != "triton":
        raise UsageError(
            "--libcuda-dir is for the triton backend; the torch backend takes it from the "
            "GPU profile (tcm gpu --save-profile records it)"
        )
    spec: ops.WarmSpec
    if backend == "triton":
        if not kernels:
            raise UsageError("the triton backend needs --kernels (e.g. --kernels tutorials)")
        spec = ops.TritonWarm(
            kernels, list(targets(target)), python=python, libcuda_dirs=list(libcuda_dir or [])
        )
    elif backend == "command":
        spec = ops.CommandWarm(
            command or [], inductor=inductor, vllm=vllm_cache, gpu_profiles=list(gpu_profile or [])
        )
    elif backend in ("torch", "vllm") and not model:
        raise UsageError(f"the {backend} backend needs --model (e.g. --model opt-125m)")
    elif backend == "torch":
        spec = ops.TorchWarm(
            str(model), _ints(batch, "--batch"), _ints(seq, "--seq"), dtype.split(","), python,
            gpu_profiles=list(gpu_profile or []), dynamic=dynamic, any_order=any_order,
            mark_dynamic=[d.strip() for d in (mark_dynamic or "").split(",") if d.strip()],
        )  # fmt: skip
    elif backend == "vllm":
        spec = ops.VllmWarm(
            str(model), image=image, engine=engine, token_file=hf_token_file,
            container_cache_dir=container_cache_dir, rocm=rocm, gpus=not no_gpu,
            timeout=timeout, extra_args=command or [],
        )  # fmt: skip
    else:
        raise UsageError(f"unknown backend {backend!r}; use triton, command, torch or vllm")
    with progress_bars() as progress:
        result = ops.warm(spec, output, tarball=tarball, progress=progress)
    if as_json:
        print_json(result.to_dict())
    else:
        _report(result)
    if result.returncode:
        raise typer.Exit(result.returncode)


def _report(result: "ops.WarmResult") -> None:
    shown = {
        k: v
        for k, v in result.details.items()
        if k not in ("new_keys", "runs", "gpus") and not isinstance(v, float)
    }
    if result.tarball is not None:
        shown["tarball"] = str(result.tarball)
    shown.pop("returncode", None)
    facts = esc(", ".join(f"{k} {v}" for k, v in shown.items())) + f", {result.seconds:.1f} s"
    if result.returncode:  # said once, on stderr, as a failure: not "warmed"
        err.print(
            f"[red]error:[/] the warm command exited with {result.returncode}; "
            f"{esc(result.output)} keeps what it wrote ({facts}): fix the command and warm again"
        )
        return
    out.print(f"warmed {esc(result.output)} ({result.backend}): {facts}")
    for m in result.details.get("gpus", []):
        out.print(f"  {esc(m['gpu'])} ({esc(m['target'])}, {m['how']}) -> {esc(m['dir'])}/")
    for run in result.details.get("runs", []):
        out.print(f"  {esc(run)}")
