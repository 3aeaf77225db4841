"""``tcm gpu --save-profile``'s child: record GPU 0 as this interpreter's torch and Triton see it.

Runs as ``python -m tcmtasks.warm.profile_child`` in the workload's interpreter (its torch
build and Triton are what the profile must name) and prints the profile as one JSON line.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
from typing import Any

from ..errors import MissingDependency, NoGpu
from ..gpuprofile import SDP_DTYPES, SDP_HEAD_DIMS, SDP_MASKS, GpuProfile, sdp_key
from ..producer import detect, use_workload_ptxas
from ..targets import Target
from .child import child_main


def _plain(obj: Any) -> dict[str, Any]:
    """Every public non-callable attribute, as JSON can hold it."""
    out: dict[str, Any] = {}
    for k in dir(obj):
        if k.startswith("_"):
            continue
        try:
            v = getattr(obj, k)
        except Exception:  # a property the driver cannot answer is left out
            continue
        if callable(v):
            continue
        out[k] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


def record_sdp_choices(torch: Any) -> dict[str, str]:
    """The attention backend torch picks on this GPU for each case of ``sdp_key``.

    ``scaled_dot_product_attention`` decomposes by ``torch._fused_sdp_choice``, which on a GPU
    asks the device (flash or memory-efficient kernels) and without one answers "math": a
    graph with attention would then differ from the GPU's and its key miss. Asking costs no
    kernel launch; 1,536 cases (768 of them grouped-query) take well under a second.
    """
    from torch.nn.attention import SDPBackend

    names = {int(b.value): name for name, b in SDPBackend.__members__.items()}
    choices: dict[str, str] = {}
    batch, heads, seq = 1, 8, 128
    for dtype_name, dim, mask, causal, grad, dropout, square, gqa in itertools.product(
        SDP_DTYPES, SDP_HEAD_DIMS, SDP_MASKS, (False, True), (False, True), (False, True),
        (True, False), (False, True),
    ):  # fmt: skip
        if causal and mask != "none":
            continue  # torch refuses an explicit mask together with is_causal
        dtype = getattr(torch, dtype_name)
        q_len = seq if square else 1
        # grouped-query attention: 4 query heads per key/value head (Llama-3's and Mistral's
        # ratio; torch's checks ask only that the query heads divide by the kv heads)
        kv_heads = heads // 4 if gqa else heads
        q = torch.empty(batch, heads, q_len, dim, device="cuda", dtype=dtype, requires_grad=grad)
        kv = torch.empty(batch, kv_heads, seq, dim, device="cuda", dtype=dtype,
                         requires_grad=grad)  # fmt: skip
        m = None
        if mask == "bool":
            m = torch.ones(batch, 1, q_len, seq, device="cuda", dtype=torch.bool)
        elif mask == "float":
            m = torch.zeros(batch, 1, q_len, seq, device="cuda", dtype=dtype)
        with torch.set_grad_enabled(grad):
            if gqa:
                choice = torch._fused_sdp_choice(q, kv, kv, m, 0.1 if dropout else 0.0, causal,
                                                 enable_gqa=True)  # fmt: skip
            else:
                choice = torch._fused_sdp_choice(q, kv, kv, m, 0.1 if dropout else 0.0, causal)
        key = sdp_key(dtype_name, dim, mask, causal, grad, dropout, square, gqa)
        choices[key] = names.get(int(choice), str(int(choice)))
    return choices


def record_inductor_config(torch: Any) -> dict[str, Any]:
    """Inductor's settings as its cache keys hash them, JSON-normalised (what the GPU-less
    warm replays: gpuless.settings_to_replay)."""
    from .gpuless import hashed_inductor_settings

    out: dict[str, Any] = {}
    for k, v in hashed_inductor_settings().items():
        try:
            out[k] = json.loads(json.dumps(v))
        except (TypeError, ValueError):  # a callable or an object: not replayable, left out
            continue
    return out


def record() -> GpuProfile:
    try:
        import torch
        import triton
        from triton.runtime.driver import driver
    except ImportError as exc:
        raise MissingDependency(f"{exc.name} (recording a GPU profile)", "torch") from None
    if torch.version.cuda is None:
        raise NoGpu(
            f"GPU profiles cover NVIDIA GPUs, recorded with a CUDA build of torch; this "
            f"interpreter has torch {torch.__version__} (a CPU or ROCm build)"
        )
    if not torch.cuda.is_available():
        raise NoGpu(
            "a GPU profile is recorded on the GPU it describes: no CUDA GPU is visible to "
            "this interpreter (CUDA_VISIBLE_DEVICES, driver)"
        )
    props = _plain(torch.cuda.get_device_properties(0))
    cap = torch.cuda.get_device_capability(0)
    t = driver.active.get_current_target()
    producer = detect()
    libraries = {}
    with contextlib.suppress(ImportError):
        import transformers

        libraries["transformers"] = str(transformers.__version__)
    return GpuProfile(
        name=str(props.get("name")),
        capability=(int(cap[0]), int(cap[1])),
        props=props,
        arch_list=list(torch.cuda.get_arch_list()),
        triton_target=Target.parse(f"{t.backend}:{t.arch}:{t.warp_size}"),
        triton_props=dict(driver.active.utils.get_device_properties(0)),
        torch=str(torch.__version__),
        torch_cuda=torch.version.cuda,
        triton=str(triton.__version__),
        python=str(producer.python),
        triton_key=producer.triton_key,
        ptxas=producer.ptxas,  # the workload's (main() set it first)
        libraries=libraries,
        sdp_choices=record_sdp_choices(torch),
        inductor_config=record_inductor_config(torch),
        libcuda_dirs=_libcuda_dirs(),
    )


def _libcuda_dirs() -> list[str]:
    try:
        from triton.backends.nvidia.driver import libcuda_dirs

        return [str(d) for d in libcuda_dirs()]
    except (ImportError, AssertionError, OSError, subprocess.SubprocessError):
        return []


def main() -> None:
    use_workload_ptxas()  # before torch or Triton read one: the profile names what keys hold
    child_main(lambda: print(json.dumps(record().to_dict(), sort_keys=True), flush=True))


if __name__ == "__main__":
    main()
