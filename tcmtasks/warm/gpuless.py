"""torch.compile for a GPU on a machine without it: every patch of torch and Triton internals.

Inductor asks the GPU for a few facts while it compiles (properties hashed into the FX-graph
key, capability, Triton's target, the attention kernel torch would pick) and then loads and
runs what it compiled. Answering those questions from a recorded profile (gpuprofile.py) and
skipping the loading and running makes the compile write the same cache entries a GPU compile
writes: FX graph, AOTAutograd and the target's cubins, under keys equal to the GPU's.
The model's parameters and inputs are FakeTensors on ``cuda`` (shapes and dtypes only).

This depends on torch internals that change between releases, so it runs only on the torch
versions in ``SUPPORTED`` (each patch below names the source it stands in for, as
``file:line`` in torch 2.14.1, then after " / " the line in 2.11.0 where it was read on the GPU
machine), is applied only inside :func:`patched`, and is undone when that block ends.
``torch.cuda.is_available()`` stays False throughout: FakeTensorMode then keeps to its
no-device path. Out of scope, refused by the caller: training graphs, dynamic shapes,
max-autotune (each needs the GPU while compiling). docs/gpu-less-warm.md says why each patch
exists and what the H200 showed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import NeedsGpu, UsageError
from ..gpuprofile import GpuProfile, WarmRuntime, load, runtime_mismatch
from . import gpuless_attention as attention

#: torch releases (major.minor) whose internals these patches were written and tested against.
SUPPORTED = ("2.11", "2.14")


#: what to do about a model or graph on the CPU, said wherever one is met
ON_CUDA = (
    "a GPU-less warm compiles for the profile's GPU, so put the model and its inputs on "
    "'cuda' (torch.cuda.is_available() is False here: a script choosing its device by it "
    "picks the CPU)"
)


def check_supported(torch_version: str, cuda: str | None) -> None:
    """Refuse torch builds the patches do not know, in one line."""
    release = ".".join(torch_version.split("+")[0].split(".")[:2])
    if cuda is None:
        raise UsageError(
            f"torch {torch_version} is a CPU-only build: compiling for a GPU without one needs "
            f"the node's CUDA build of torch (its version string is part of every key)"
        )
    if release not in SUPPORTED:
        raise UsageError(
            f"torch {torch_version} is not supported for warming without a GPU (supported: "
            f"{', '.join(SUPPORTED)}): the torch internals this replays change between "
            f"releases; warm on the GPU instead"
        )


def profile_to_replay(torch: Any, path: str) -> GpuProfile:
    """The profile at ``path``, if this interpreter can compile for it: its runtime (torch,
    Triton, Python, ptxas, transformers where installed) must be the profile's, and no GPU
    may be visible (the replay stands in for one). One line on what differs otherwise."""
    import importlib.util

    import triton

    from ..producer import detect

    profile = load(path)
    own = detect()
    libraries = {}
    if importlib.util.find_spec("transformers") is not None:
        import transformers

        libraries["transformers"] = str(transformers.__version__)
    have = WarmRuntime(
        str(torch.__version__), triton.__version__, own.python, own.triton_key, own.ptxas,
        libraries,
    )  # fmt: skip
    mismatch = runtime_mismatch(profile, have)
    if mismatch:
        raise UsageError(mismatch)
    if torch.cuda.is_available():
        raise UsageError(
            "a GPU is visible here: warm on it without --gpu-profile, or hide it "
            "(CUDA_VISIBLE_DEVICES=) to compile for the profile's GPU"
        )
    return profile


class _Patches:
    """setattr with a record, undone in reverse order."""

    def __init__(self) -> None:
        self.undo: list[Callable[[], None]] = []
        self.names: list[str] = []

    def set(self, owner: Any, name: str, value: Any, where: str) -> None:
        missing = object()
        old = (
            owner.__dict__.get(name, missing)
            if isinstance(owner, type)
            else getattr(owner, name, missing)
        )
        setattr(owner, name, value)
        self.names.append(f"{getattr(owner, '__name__', type(owner).__name__)}.{name} ({where})")

        def restore() -> None:
            if old is missing:
                delattr(owner, name)
            else:
                setattr(owner, name, old)

        self.undo.append(restore)

    def close(self) -> None:
        while self.undo:
            self.undo.pop()()


@contextlib.contextmanager
def patched(profile: GpuProfile) -> Iterator[list[str]]:
    """Make torch, Inductor and Triton compile for ``profile``'s GPU until the block ends;
    yields the names of the patches (for reports)."""
    import torch

    check_supported(str(torch.__version__), torch.version.cuda)
    p = _Patches()
    try:
        changes = settings_to_replay(profile)
        if changes:  # first: the replay's own patches below must win over the profile's
            from torch._inductor import config

            ctx = config.patch(changes)
            ctx.__enter__()
            p.undo.append(lambda: ctx.__exit__(None, None, None))
            p.names += [f"inductor config {k} = {v!r} (the profile's)" for k, v in changes.items()]
        _install(torch, profile, p)
        _verify(profile)
        yield p.names
    finally:
        p.close()


def settings_to_replay(profile: GpuProfile) -> dict[str, Any]:
    """The profile's Inductor settings that differ here, as this torch holds them: every one
    is hashed into the FX-graph and AOTAutograd keys, and some come from the environment the
    profile was recorded in (``cpp.cxx`` is ``$CXX``), so the runner compiles with the GPU
    machine's values. Settings this torch lacks are left alone (the torch build is checked
    equal before this runs)."""
    here = hashed_inductor_settings()
    changes: dict[str, Any] = {}
    for name, want in sorted(profile.inductor_config.items()):
        if name not in here:
            continue
        try:
            have = json.loads(json.dumps(here[name]))
        except (TypeError, ValueError):
            continue
        if have != want:
            changes[name] = _like(want, here[name])
    return changes


def hashed_inductor_settings() -> dict[str, Any]:
    """Inductor's settings as its FX-graph and AOTAutograd keys hash them (codecache.py,
    FxGraphHashDetails: ``save_config_portable(ignore_private_configs=False)``), as held."""
    from torch._inductor import config

    try:
        return dict(config.save_config_portable(ignore_private_configs=False))
    except TypeError:  # a torch before the argument
        return dict(config.save_config_portable())


def _like(value: Any, current: Any) -> Any:
    """A JSON value back in the container types the setting holds (tuples became lists)."""
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def _install(torch: Any, profile: GpuProfile, p: _Patches) -> None:
    props = _Props(profile)
    cap = profile.capability

    def device_touched() -> None:
        raise NeedsGpu(
            "the GPU-less compile tried to initialise CUDA: this model uses a path tcm's "
            "replay does not cover; warm it on the GPU"
        )

    # Any real CUDA use would otherwise fail later with "no NVIDIA driver", far from its cause.
    p.set(torch.cuda, "_lazy_init", device_touched, "cuda/__init__.py:563")

    # Kernels compile in this process, where the patches are: a compile worker loads each
    # kernel's module, which asks for an active GPU backend and fails ("Could not find an
    # active GPU backend", seen on the 16-core GPU machine, where OPT-125m's compile reached
    # the worker pool; async_compile.py use_process_pool / triton_helpers.set_driver_to_gpu).
    from torch._inductor import config as inductor_config

    p.set(inductor_config, "compile_threads", 1, "_inductor/config.py compile_threads")

    # The FX-graph key's system info: device name and CUDA version; on error it silently
    # becomes {} and every key differs from the GPU's (codecache.py:332 / :180-213).
    replies: dict[str, Any] = {
        "get_device_properties": lambda device=None: props,
        "get_device_capability": lambda device=None: cap,
        "get_device_name": lambda device=None: profile.name,
        "get_arch_list": lambda: list(profile.arch_list),
        "current_device": lambda: 0,
        "device_count": lambda: 1,
        "set_device": lambda device: None,
        "synchronize": lambda device=None: None,
        "is_bf16_supported": lambda including_emulation=True: cap >= (8, 0),
        "_exchange_device": lambda device: 0,
        "_maybe_exchange_device": lambda device: 0,
    }
    for name, fn in replies.items():
        p.set(torch.cuda, name, fn, "cuda/__init__.py")

    # FakeTensorMode asks is_available() to decide whether it may initialise the device;
    # keep it on the no-device path (fake_tensor.py:1674).
    from torch._subclasses import fake_tensor

    p.set(fake_tensor.FakeTensorMode, "avoid_device_init", property(lambda self: True),
          "_subclasses/fake_tensor.py:1674")  # fmt: skip

    # Dynamo's device interface binds torch.cuda's functions as staticmethods at import, and
    # has_triton() / the scheduler's Triton check ask its is_available()
    # (_dynamo/device_interface.py:209 / :218-229, utils/_triton.py:209, _inductor/scheduler.py:9312
    # / :5900).
    from torch._dynamo import device_interface as di

    interface = {
        "get_device_properties": lambda device=None: props,
        "get_compute_capability": lambda device=None: cap[0] * 10 + cap[1],
        "current_device": lambda: 0,
        "set_device": lambda device: None,
        "device_count": lambda: 1,
        "synchronize": lambda device=None: None,
        "exchange_device": lambda device: 0,
        "maybe_exchange_device": lambda device: 0,
        "is_bf16_supported": lambda including_emulation=False: cap >= (8, 0),
        "memory_allocated": lambda device=None: 0,
        "get_raw_stream": lambda idx=0: 0,
        "is_available": lambda: True,
    }
    for name, fn in interface.items():
        p.set(di.CudaInterface, name, staticmethod(fn), "_dynamo/device_interface.py:209")  # type: ignore[arg-type]
    p.set(di, "caching_worker_device_properties",
          {**di.caching_worker_device_properties, "cuda": [props]},
          "_dynamo/device_interface.py:36")  # fmt: skip

    # Codegen asks Triton's active driver for the target and device properties; Inductor's
    # set_driver_to_gpu would replace ours (runtime/triton_helpers.py:70).
    from torch._inductor.runtime import triton_helpers
    from triton.runtime.driver import driver

    p.set(driver, "_active", _standin_driver(torch, profile), "triton/runtime/driver.py")
    p.set(triton_helpers, "set_driver_to_gpu", lambda: None, "runtime/triton_helpers.py:70")

    # Launchers load cubins into a CUDA context; the cubins are compiled and cached, only the
    # loading is skipped (runtime/triton_heuristics.py:1060,1020 / :659).
    from torch._inductor.runtime import triton_heuristics as th

    p.set(th.CachingAutotuner, "_make_launchers", lambda self: None,
          "runtime/triton_heuristics.py:1060")  # fmt: skip
    p.set(th.CachingAutotuner, "_dynamic_scale_rblock", lambda self: None,
          "runtime/triton_heuristics.py:1020")  # fmt: skip

    # Dynamo annotates each graph input with type(value): FakeTensor here, nn.Parameter or
    # Tensor on the GPU; the annotation is in the graph code the AOTAutograd key hashes
    # (_dynamo/variables/builder.py:2041 / :2440).
    from torch._dynamo import output_graph

    original_cgi = output_graph.SubgraphTracer.create_graph_input

    def create_graph_input(self: Any, name: str, type_expr: Any, example_value: Any,
                           *a: Any, **k: Any) -> Any:  # fmt: skip
        if isinstance(type_expr, type) and issubclass(type_expr, fake_tensor.FakeTensor):
            is_param = isinstance(example_value, torch.nn.Parameter)
            type_expr = torch.nn.Parameter if is_param else torch.Tensor
        return original_cgi(self, name, type_expr, example_value, *a, **k)

    p.set(output_graph.SubgraphTracer, "create_graph_input", create_graph_input,
          "_dynamo/output_graph.py:4245")  # fmt: skip

    # Constants: tracing computes small constant tensors for real (proxy_tensor.py:1490-1510)
    # and Inductor folds uniform-valued ones (constant_folding.py:306, joint_graph.py:509).
    # On the GPU those run on the device; their values do not depend on it, so they run on
    # the CPU here.
    from torch._inductor import constant_folding
    from torch.fx.experimental import proxy_tensor

    standins = _TensorSet()
    to_cpu = _cuda_to_cpu_mode(torch, standins)
    unset_fake = proxy_tensor.unset_fake_temporarily

    @contextlib.contextmanager
    def unset_fake_on_cpu() -> Iterator[Any]:
        with unset_fake() as mode, to_cpu():
            yield mode

    p.set(proxy_tensor, "unset_fake_temporarily", unset_fake_on_cpu,
          "fx/experimental/proxy_tensor.py:1372,1490,1501")  # fmt: skip
    fold = constant_folding.ConstantFolder.run

    def fold_on_cpu(self: Any, *a: Any, **k: Any) -> Any:
        with to_cpu():
            return fold(self, *a, **k)

    p.set(constant_folding.ConstantFolder, "run", fold_on_cpu, "_inductor/constant_folding.py:306")

    # Such constants can stay behind as attributes of the graph Inductor hashes, where a
    # tensor's device is part of the FX-graph key: describe the stand-ins as the GPU's
    # (_inductor/codecache.py:625 extract_tensor_metadata_for_cache_key, used by
    # FxGraphCachePickler._reduce_tensor).
    from torch._inductor import codecache

    describe = codecache.extract_tensor_metadata_for_cache_key

    def describe_as_on_gpu(t: Any) -> Any:
        meta = describe(t)
        if t in standins:
            meta = dataclasses.replace(meta, device=torch.device("cuda", 0))
        return meta

    p.set(codecache, "extract_tensor_metadata_for_cache_key", describe_as_on_gpu,
          "_inductor/codecache.py:625")  # fmt: skip

    # Attention: without the device, torch's C++ decomposition of scaled_dot_product_attention
    # finds "no CUDA device" and takes the math path, where the GPU takes cuDNN, flash or
    # memory-efficient kernels (the H200: cuDNN for fp16/bf16): another graph, another key.
    # Tracing runs with the Python dispatcher on, so a Python kernel for the composite op is
    # used there; it asks the profile which backend the GPU chose and calls the same aten ops
    # as aten/src/ATen/native/transformers/attention.cpp (scaled_dot_product_attention).
    sdpa = torch.ops.aten.scaled_dot_product_attention.default
    key = torch._C.DispatchKey.CompositeImplicitAutograd
    had = sdpa.py_kernels.get(key)
    sdpa.py_impl(key)(attention.kernel_as_on(torch, profile, sdpa, ON_CUDA))

    def restore_sdpa() -> None:
        sdpa.py_kernels.pop(key, None)
        if had is not None:
            sdpa.py_kernels[key] = had
        sdpa._dispatch_cache.clear()

    p.undo.append(restore_sdpa)
    p.names.append("aten::scaled_dot_product_attention CompositeImplicitAutograd (attention.cpp)")

    # Running: after compiling a graph Dynamo calls it on the (fake) inputs; the compiled code
    # would need the device, so the graph runs as traced, on fakes, to reach the next graph
    # (_inductor/compile_fx.py:2901).
    from torch._guards import detect_fake_mode
    from torch._inductor import compile_fx as cfx

    compile_fx = cfx.compile_fx

    def compile_then_trace(gm: Any, example_inputs: Any, *a: Any, **k: Any) -> Any:
        refusal = _needs_the_gpu(torch, example_inputs, k.get("config_patches") or {})
        if refusal:
            raise NeedsGpu(f"this compiles {refusal}")
        compile_fx(gm, example_inputs, *a, **k)

        def run(*args: Any) -> Any:
            with detect_fake_mode(args) or contextlib.nullcontext():
                return gm(*args)

        return run

    p.set(cfx, "compile_fx", compile_then_trace, "_inductor/compile_fx.py:2901")


def _needs_the_gpu(torch: Any, example_inputs: Any, patches: dict[str, Any]) -> str | None:
    """What about a graph the replay cannot compile as the GPU would, said before Inductor
    starts: a training graph (its backward compiles when the GPU runs it), a graph for the CPU
    (keyed for this runner's CPU, not the node's), CUDA graphs and max-autotune (recorded and
    benchmarked on the device while compiling). ``patches``: torch.compile's mode and options,
    which reach Inductor as arguments, not yet in its config."""
    from torch._inductor import config

    def setting(name: str) -> Any:
        return (
            patches[name] if name in patches else functools.reduce(getattr, name.split("."), config)
        )

    tensors = [t for t in example_inputs if isinstance(t, torch.Tensor)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return (
            "a training graph (called with gradients enabled on tensors that require them): "
            "warm inference, under torch.no_grad() or torch.inference_mode(), or warm on the GPU"
        )
    if tensors and not any(t.device.type == "cuda" for t in tensors):
        return f"a graph whose inputs are all on the CPU: {ON_CUDA}"
    if setting("triton.cudagraphs"):
        return (
            "with CUDA graphs (mode='reduce-overhead' or triton.cudagraphs), which are recorded "
            "on the GPU: warm on the GPU, or compile without them"
        )
    if setting("max_autotune") or setting("max_autotune_gemm"):
        return "with max-autotune, which benchmarks kernels on the GPU: warm on the GPU"
    return None


@contextlib.contextmanager
def errors_unwrapped() -> Iterator[None]:
    """Dynamo wraps what a patch raises mid-trace (BackendCompilerFailed, a graph break);
    tcm's own refusal, innermost, is what the user should read."""
    try:
        yield
    except Exception as exc:
        seen: set[int] = set()
        e: BaseException | None = exc
        while e is not None and id(e) not in seen:
            seen.add(id(e))
            if isinstance(e, UsageError):  # NeedsGpu included
                raise type(e)(str(e)) from None
            e = getattr(e, "inner_exception", None) or e.__cause__ or e.__context__
        raise


def _verify(profile: GpuProfile) -> None:
    """The key's system info must name the profile's GPU, or every FX key would differ."""
    from torch._inductor.codecache import CacheBase

    system = CacheBase.get_system()
    name = (system.get("device") or {}).get("name")
    if name != profile.name:
        raise NeedsGpu(
            f"Inductor's key would name device {name!r}, not {profile.name!r}: the replay "
            f"does not cover this torch build"
        )


class _Props:
    """Stands in for torch's _CudaDeviceProperties: the recorded attributes."""

    def __init__(self, profile: GpuProfile):
        for k, v in profile.props.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        return f"_CudaDeviceProperties(name={getattr(self, 'name', None)!r})"


def _standin_driver(torch: Any, profile: GpuProfile) -> Any:
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase

    t = profile.triton_target
    target = GPUTarget(t.backend, int(t.arch) if t.arch.isdigit() else t.arch, t.warp_size)
    triton_props = dict(profile.triton_props)

    class Utils:
        def get_device_properties(self, device: int) -> dict[str, Any]:
            return dict(triton_props)

    class ProfileDriver(DriverBase):  # type: ignore[misc]
        """Answers as the profile's GPU; loads and launches nothing."""

        def __init__(self) -> None:
            self.utils = Utils()

        @classmethod
        def is_active(cls) -> bool:
            return True

        def get_current_target(self) -> Any:
            return target

        def get_current_device(self) -> int:
            return 0

        def set_current_device(self, device: int) -> None:
            pass

        def get_current_stream(self, device: int | None = None) -> int:
            return 0

        def get_active_torch_device(self) -> Any:
            return torch.device("cuda", 0)

        def get_device_interface(self) -> Any:
            return torch.cuda

        def map_python_to_cpp_type(self, ty: str) -> str:
            return "void*"

        def get_benchmarker(self) -> Any:
            raise NeedsGpu("benchmarking needs the GPU (max-autotune is out of scope)")

        def get_empty_cache_for_benchmark(self) -> Any:
            raise NeedsGpu("benchmarking needs the GPU (max-autotune is out of scope)")

        def clear_cache(self, cache: Any) -> None:
            pass

    return ProfileDriver()


class _TensorSet:
    """Tensors by identity, held weakly (a WeakSet would compare tensors with ==)."""

    def __init__(self) -> None:
        self._refs: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()

    def add(self, t: Any) -> None:
        self._refs[id(t)] = t

    def __contains__(self, t: Any) -> bool:
        return self._refs.get(id(t)) is t


def _cuda_to_cpu_mode(torch: Any, standins: _TensorSet) -> Callable[[], Any]:
    """A dispatch mode that runs ops meant for ``cuda`` on the CPU (real tensors only).

    What it makes from a ``cuda`` request joins ``standins``, and so do the tensors sent to
    ``cuda``, and what they were copied from: without the device, FakeTensorMode makes
    ``torch.tensor(..., device="cuda")`` on the CPU and moves it, where the GPU makes it on
    the device (``only_lift_cpu_tensors``); the CPU original is kept as a graph constant."""
    from torch.utils import _pytree as pytree
    from torch.utils._python_dispatch import TorchDispatchMode

    copied_from: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
    copies: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()

    def cpu(x: Any) -> Any:
        if isinstance(x, torch.device) and x.type == "cuda":
            return torch.device("cpu")
        if isinstance(x, str) and x.startswith("cuda"):
            return "cpu"
        return x

    class CudaToCpu(TorchDispatchMode):  # type: ignore[misc]
        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            kwargs = kwargs or {}
            new_args, new_kwargs = pytree.tree_map(cpu, args), pytree.tree_map(cpu, kwargs)
            leaves = pytree.tree_leaves((args, kwargs))
            tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
            sent_to_gpu = pytree.tree_leaves((new_args, new_kwargs)) != leaves
            out = func(*new_args, **new_kwargs)
            outs = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
            if sent_to_gpu:
                for t in tensors:
                    standins.add(t)
                    origin = copied_from.get(id(t))
                    if origin is not None and copies.get(id(t)) is t:
                        standins.add(origin)
            if sent_to_gpu or any(t in standins for t in tensors):
                for t in outs:
                    standins.add(t)
            elif func is torch.ops.aten.clone.default and tensors and outs:
                copied_from[id(outs[0])], copies[id(outs[0])] = tensors[0], outs[0]
            return out

    return CudaToCpu


def fake_module(torch: Any, module: Any, mode: Any) -> Any:
    """Replace ``module``'s parameters and buffers (built on ``meta``) by FakeTensors on
    ``cuda`` with the same shapes, strides, dtypes and requires_grad; shared (tied) ones stay
    shared, as Dynamo lifts a shared parameter once."""
    memo: dict[int, Any] = {}
    with mode:
        for mod in module.modules():
            for table, is_param in ((mod._parameters, True), (mod._buffers, False)):
                for name, t in list(table.items()):
                    if t is None:
                        continue
                    if id(t) not in memo:
                        fake = torch.empty_strided(
                            t.shape, t.stride(), dtype=t.dtype, device="cuda"
                        )
                        memo[id(t)] = (
                            torch.nn.Parameter(fake, requires_grad=t.requires_grad)
                            if is_param
                            else fake
                        )
                    table[name] = memo[id(t)]
    return module
