"""``tcm warm --backend command --gpu-profile P -- python warmup.py``: the workload's own
warm-up script, compiled for the profile's GPU on a machine without it.

The script runs in this process (``runpy``) under the same replay as the torch backend
(gpuless.py), inside a FakeTensorMode: tensors it makes have shapes and dtypes, no values.
Three things a script does on a node are answered here, so that it traces the program the
node traces:

* ``module.to("cuda")`` / ``.cuda()`` gives the module FakeTensor parameters on ``cuda``
  (what the torch backend does to the model it builds); to the CPU it is refused;
* transformers' ``from_pretrained`` builds the model from its config alone, on ``meta``, in
  the dtype it would load (the weights' values do not reach the graph; the runner needs
  only ``config.json``), and returns it in eval mode as ``from_pretrained`` does;
* ``torch.cuda.synchronize`` and friends answer as the profile's GPU (gpuless.py).

What cannot be known without the GPU is refused in one line: reading a value back
(``.item()``, ``.tolist()``, ``bool(t)``, ``.numpy()``, data-dependent shapes), naming the
script's line; and, before Inductor starts on a graph, training graphs, graphs for the CPU,
CUDA graphs and max-autotune (gpuless.py ``_needs_the_gpu``).

The script's own output goes to stderr: stdout carries the result lines for the parent
(warm/child.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import runpy
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import MissingDependency, NeedsGpu, UsageError
from .child import child_main
from .helpers import inductor_helpers, inductor_launches, print_report

#: what a fake tensor raises where a script reads a value back (their class names)
_VALUE_READS = ("DataDependentOutputException", "DynamicOutputShapeException")
#: where a frame is not the script's own (the line to name is the script's)
_NOT_THE_SCRIPTS = (
    f"{os.sep}torch{os.sep}",
    f"{os.sep}transformers{os.sep}",
    f"{os.sep}tcmtasks{os.sep}",
    f"{os.sep}runpy.py",
)


def run(profile_path: str, target: list[str]) -> None:
    """Run ``target`` (``script.py args`` or ``-m module args``) for the profile's GPU and
    print what it compiled."""
    try:
        import torch
    except ImportError:
        raise MissingDependency("torch (a GPU-less warm of a script)", "torch") from None
    from torch._dynamo.utils import counters
    from torch._subclasses.fake_tensor import FakeTensorMode

    from . import gpuless

    gpuless.check_supported(str(torch.__version__), torch.version.cuda)
    profile = gpuless.profile_to_replay(torch, profile_path)
    mode = FakeTensorMode()
    counters.clear()
    t = time.perf_counter()
    with (
        gpuless.patched(profile),
        inductor_launches() as launched,
        _script_patches(torch, mode),
    ):
        with _output_to_stderr(), mode, gpuless.errors_unwrapped(), _value_reads_refused():
            _run_target(target)
        report = inductor_helpers(launched, profile.libcuda_dirs)
    seen = {k: dict(v) for k, v in counters.items()}
    inductor = seen.get("inductor", {})
    record = {
        "gpu": profile.label,
        "script": " ".join(target),
        "compile_s": time.perf_counter() - t,
        "fx_graphs": inductor.get("fxgraph_cache_miss", 0),
        "fx_hits": inductor.get("fxgraph_cache_hit", 0),
        "aot_graphs": seen.get("aot_autograd", {}).get("autograd_cache_saved", 0),
    }
    if not (record["fx_graphs"] or record["fx_hits"]):
        raise UsageError(
            f"{' '.join(target)} compiled no graph: it must call a torch.compile'd model or "
            "function on 'cuda' tensors"
        )
    print(json.dumps(record), flush=True)
    print_report(report)


def _run_target(target: list[str]) -> None:
    """As ``python script args`` / ``python -m module args`` would; exit 0 is success."""
    module = target[0] == "-m"
    name = target[1] if module else target[0]
    sys.argv = [name, *target[(2 if module else 1) :]]
    if not module:
        sys.path.insert(0, str(Path(name).resolve().parent))
    try:
        if module:
            runpy.run_module(name, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(name, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise


@contextlib.contextmanager
def _output_to_stderr() -> Iterator[None]:
    """Send fd 1 (print and C writes alike) to stderr while the script runs: stdout is for
    the result lines."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _value_reads_refused() -> Iterator[None]:
    """A fake tensor has no value to read back: name the script's line that asked, once."""
    try:
        yield
    except RuntimeError as exc:
        name = type(exc).__name__
        if name not in _VALUE_READS and "not supported for tensor subclasses" not in str(exc):
            raise
        where = _scripts_line(exc)
        raise NeedsGpu(
            f"{where}reads a tensor's value back ({str(exc).splitlines()[0][:80]}): without "
            "the GPU tensors have shapes, not values; leave that out of the warm-up (a flag "
            "the script reads), or warm on the GPU"
        ) from None


def _scripts_line(exc: BaseException) -> str:
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__)
        if not any(part in f.filename for part in _NOT_THE_SCRIPTS)
    ]  # fmt: skip
    if not frames:
        return ""
    f = frames[-1]
    return f"{Path(f.filename).name}:{f.lineno} ({(f.line or '').strip()}) "


@contextlib.contextmanager
def _script_patches(torch: Any, mode: Any) -> Iterator[None]:
    """``Module.to``/``.cuda`` and transformers' ``from_pretrained`` as described above."""
    from . import gpuless

    module_to, module_cuda = torch.nn.Module.to, torch.nn.Module.cuda

    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        device, dtype, _non_blocking, _fmt = torch._C._nn._parse_to(*args, **kwargs)
        if device is None or device.type == "meta":
            return module_to(self, *args, **kwargs)
        if device.type != "cuda":
            raise NeedsGpu(f"{type(self).__name__}.to({str(device)!r}): {gpuless.ON_CUDA}")
        if dtype is not None:
            module_to(self, dtype=dtype)
        return gpuless.fake_module(torch, self, mode)

    def cuda(self: Any, device: Any = None) -> Any:
        return to(self, "cuda")

    torch.nn.Module.to, torch.nn.Module.cuda = to, cuda
    undo = _from_config_instead(torch, to)
    try:
        yield
    finally:
        undo()
        torch.nn.Module.to, torch.nn.Module.cuda = module_to, module_cuda


#: from_pretrained's arguments that say where the config is, passed on to the config's
#: from_pretrained; the rest but the weights' own become config overrides, as transformers does
_CONFIG_SOURCE = ("cache_dir", "force_download", "local_files_only", "token", "revision",
                  "subfolder", "trust_remote_code")  # fmt: skip
_WEIGHTS_ONLY = ("low_cpu_mem_usage", "use_safetensors", "weights_only", "state_dict",
                 "offload_folder", "offload_state_dict", "max_memory", "quantization_config",
                 "key_mapping", "tp_plan", "tp_size", "device_mesh", "variant")  # fmt: skip


def _from_config_instead(torch: Any, to: Any) -> Any:
    """Patch transformers' ``from_pretrained`` (auto classes and models) to build the model
    from its config on ``meta``; returns the undo (nothing to undo without transformers)."""
    try:
        from transformers import AutoConfig, modeling_utils
        from transformers.models.auto import auto_factory
    except ImportError:
        return lambda: None

    def build(cls: Any, path: Any, kwargs: dict[str, Any], auto: bool) -> Any:
        source = {k: kwargs.pop(k) for k in _CONFIG_SOURCE if k in kwargs}
        for k in _WEIGHTS_ONLY:
            kwargs.pop(k, None)
        device_map = kwargs.pop("device_map", None)
        dtype = kwargs.pop("dtype", kwargs.pop("torch_dtype", "auto"))
        attn = kwargs.pop("attn_implementation", None)
        config = kwargs.pop("config", None)
        if config is None or isinstance(config, str | os.PathLike):
            loader = AutoConfig if auto else cls.config_class
            config = loader.from_pretrained(config or path, **source, **kwargs)
        else:
            for k, v in kwargs.items():
                setattr(config, k, v)
        if dtype in ("auto", None):
            dtype = getattr(config, "dtype", None) or torch.float32
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        extra = {"attn_implementation": attn} if attn else {}
        if source.get("trust_remote_code"):
            extra["trust_remote_code"] = True
        with torch.device("meta"):
            model = (
                cls.from_config(config, dtype=dtype, **extra)
                if auto
                else cls._from_config(config, dtype=dtype, **extra)
            )
        model.eval()  # as from_pretrained returns it
        if device_map is not None and _on_cuda(device_map):
            model = to(model, "cuda")
        return model

    auto_from = auto_factory._BaseAutoModelClass.__dict__["from_pretrained"]
    model_from = modeling_utils.PreTrainedModel.__dict__["from_pretrained"]
    auto_factory._BaseAutoModelClass.from_pretrained = classmethod(
        lambda cls, path, *a, **k: build(cls, path, k, auto=True)
    )
    modeling_utils.PreTrainedModel.from_pretrained = classmethod(
        lambda cls, path, *a, **k: build(cls, path, k, auto=False)
    )

    def undo() -> None:
        auto_factory._BaseAutoModelClass.from_pretrained = auto_from
        modeling_utils.PreTrainedModel.from_pretrained = model_from

    return undo


def _on_cuda(device_map: Any) -> bool:
    """Whether a ``device_map`` puts the model on the GPU (``cuda``, ``cuda:0``, 0, auto)."""
    values = device_map.values() if isinstance(device_map, dict) else [device_map]
    return any(v == "auto" or isinstance(v, int) or str(v).startswith("cuda") for v in values)


def main() -> None:
    from ..producer import use_workload_ptxas

    use_workload_ptxas()  # as the torch backend's child, before torch or Triton read one
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu-profile", required=True)
    ap.add_argument("target", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    target = a.target[1:] if a.target[:1] == ["--"] else a.target
    child_main(lambda: run(a.gpu_profile, target))


if __name__ == "__main__":
    main()
