"""Warming torch.compile for a GPU on this machine, which has none (tcmtasks/warm/gpuless.py).

The producer side runs for real: the CUDA build of torch in ``TCM_CUDA_PYTHON`` compiles
tiny-opt for the H200 profile that ships with tcm (its device part, with this interpreter's
runtime: a profile names the runtime it must be replayed with). That the GPU then hits what
this writes is shown on the GPU machine (bench/gpu_proof_gpuless.py, bench/RESULTS.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tcmtasks import ops
from tcmtasks.cache.entries import EntryKind, scan_root
from tcmtasks.errors import UsageError
from tcmtasks.gpuprofile import load, save
from tcmtasks.targets import Target
from tests.support.cuda_utils import cuda_utils_lookup
from tests.support.profiles import H200, REPO, runtime_of
from tests.support.tools import require_cuda_python


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def cuda_python() -> str:
    return require_cuda_python()


@pytest.fixture(scope="module")
def runtime(cuda_python: str) -> dict:
    found = runtime_of(cuda_python)
    assert found["cuda"] and not found["available"], "these tests need CUDA torch and no GPU"
    return found


@pytest.fixture(scope="module")
def profile(fleet_warm) -> Path:
    """The H200's device facts with the test interpreter's runtime."""
    return fleet_warm.profiles["h200"]


@pytest.fixture(scope="module")
def warmed(fleet_warm):
    """The H200's cache of the session's fleet warm (H100 and H200, one run)."""
    return fleet_warm.out / "nvidia-h200", fleet_warm.result


def test_one_warm_writes_fx_graph_aot_and_sm90_kernels_for_each_gpu(fleet_warm) -> None:
    runs = fleet_warm.result.details["runs"]
    assert [(r["gpu"].split(" (")[0], r["how"]) for r in runs] == [
        ("NVIDIA H100 80GB HBM3", "gpu-less"), ("NVIDIA H200", "gpu-less")
    ]  # fmt: skip
    assert all(r["fx_graphs"] == 1 and r["aot_graphs"] == 1 for r in runs)
    keys = {}
    for gpu in ("nvidia-h100-80gb-hbm3", "nvidia-h200"):
        out = fleet_warm.out / gpu
        fx = [p.name for p in out.glob("fxgraph/*/*") if p.is_dir()]
        aot = [p.name for p in out.glob("aotautograd/*") if p.is_dir()]
        assert len(fx) == 1 and len(aot) == 1
        kernels = [e for e in scan_root(out / "triton" / "0") if e.kind == EntryKind.KERNEL]
        assert kernels, "no Triton kernel was compiled"
        assert {e.target for e in kernels} == {Target("cuda", "90", 32)}
        assert all(any(f.name.endswith(".cubin") for f in e.files) for e in kernels)
        keys[gpu] = (fx, aot, {e.key for e in kernels})
    h100, h200 = keys.values()
    # the graphs' keys hold the GPU's name; the kernels (same arch, same code) are the same
    assert h100[0] != h200[0] and h100[1] != h200[1] and h100[2] == h200[2]


def test_cuda_utils_waits_where_a_restored_node_first_asks(fleet_warm, tcm, tmp_path) -> None:
    """Triton's cuda_utils, built against tcm's libcuda stub under the key the profile's node
    computes (this Triton hashes the node's libcuda dir): the workload's Triton, unable to
    compile C, finds it beside each GPU's kernels, and after a restore in the node's plain
    Triton cache too, where a torch.compile process first asks for it (its kernels' modules
    call set_driver_to_gpu() before Inductor points Triton at its own dir)."""
    runs = fleet_warm.result.details["runs"]
    # Inductor's static launcher serves every kernel here: no __triton_launcher to build
    assert all(r["helpers"]["built"] == ["cuda_utils"] for r in runs), runs
    node_dirs = load(fleet_warm.profiles["h200"]).libcuda_dirs
    assert len(node_dirs) == 2  # the H200 machine's ldconfig lists two
    h200 = tmp_path / "h200"  # a miss leaves an empty key dir: not in the session's warm
    shutil.copytree(fleet_warm.out / "nvidia-h200" / "triton" / "0", h200)
    assert cuda_utils_lookup(fleet_warm.python, h200, node_dirs) == "found"
    assert cuda_utils_lookup(fleet_warm.python, h200, node_dirs, path=str(tmp_path)) == "found"
    assert cuda_utils_lookup(fleet_warm.python, h200, ["/elsewhere"]) == "missed"
    image = f"oci:{tmp_path / 'img'}:v1"
    tcm("package", fleet_warm.out, image)
    node = tmp_path / "node"
    tcm("extract", image, "-c", node / "triton", "--inductor-dir", node / "inductor",
        "--gpu", "NVIDIA H200", "--python", fleet_warm.python)  # fmt: skip
    for cache in (node / "triton", node / "inductor" / "triton" / "0"):
        assert cuda_utils_lookup(fleet_warm.python, cache, node_dirs) == "found", cache
    assert cuda_utils_lookup(fleet_warm.python, tmp_path / "empty", node_dirs) == "missed"


def test_attention_takes_the_kernel_the_gpu_chose(warmed) -> None:
    """Without the replay, torch decomposes attention into matmuls (its no-device answer);
    the H200 picked cuDNN attention for fp16 (the profile records it), so must the graph."""
    out, _ = warmed
    code = "\n".join(p.read_text() for p in out.glob("*/*.py") if "def call(" in p.read_text())
    assert "_scaled_dot_product_cudnn_attention" in code
    assert "extern_kernels.bmm" not in code


def test_keys_do_not_depend_on_the_run_the_fleet_or_the_output_path(
    warmed, cuda_python: str, profile: Path, tmp_path: Path
) -> None:
    """A second warm, of the H200 alone, in another process and another dir: the same
    FX-graph, AOTAutograd and kernel keys as the fleet's H200 cache (the node restores to its
    own path; nothing of this run, nor of the other GPU's, may be in a key)."""
    first, _ = warmed
    second = tmp_path / "elsewhere" / "inductor"
    ops.warm(ops.TorchWarm("tiny-opt", python=cuda_python, gpu_profiles=[profile]), second)

    def keys(d: Path) -> dict[str, set[str]]:
        return {
            "fx": {p.name for p in d.glob("fxgraph/*/*")},
            "aot": {p.name for p in d.glob("aotautograd/*")},
            "kernels": {p.name for p in d.glob("triton/0/*")},
        }

    assert keys(first) == keys(second / "nvidia-h200") and all(keys(first).values())


def test_the_profiles_inductor_settings_are_the_ones_compiled_with(
    warmed, cuda_python: str, profile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inductor hashes its settings into the graph keys, and ``cpp.cxx`` is ``$CXX`` where
    the profile was recorded (/opt/gcc/bin/g++ on the GPU machines): the runner compiles with
    the profile's value, so its keys are those of a runner whose $CXX is that one, not its
    own."""
    first, _ = warmed

    def graph_keys(d: Path) -> dict[str, set[str]]:
        return {
            "fx": {p.name for p in d.glob("fxgraph/*/*")},
            "aot": {p.name for p in d.glob("aotautograd/*")},
        }

    p = load(profile)
    p.inductor_config = {"cpp.cxx": [None, "/opt/gcc/bin/g++"], "no.such.setting": 1}
    with_setting = save(p, tmp_path / "h200-cxx.json")
    a = ops.warm(
        ops.TorchWarm("tiny-opt", python=cuda_python, gpu_profiles=[with_setting]),
        tmp_path / "a",
    )
    assert [r["settings"] for r in a.details["runs"]] == [{"cpp.cxx": "(None, '/opt/gcc/bin/g++')"}]
    monkeypatch.setenv("CXX", "/opt/gcc/bin/g++")
    ops.warm(ops.TorchWarm("tiny-opt", python=cuda_python, gpu_profiles=[profile]), tmp_path / "b")
    keys_a, keys_b = (
        graph_keys(tmp_path / "a" / "nvidia-h200"),
        graph_keys(tmp_path / "b" / "nvidia-h200"),
    )
    assert keys_a == keys_b and all(keys_a.values())
    assert keys_a["fx"].isdisjoint(graph_keys(first)["fx"])  # $CXX is in the key


def test_each_gpus_record_names_that_gpu_not_this_host(fleet_warm, runtime: dict) -> None:
    members = json.loads((fleet_warm.out / ".tcm-fleet.json").read_text())["members"]
    assert [(m["dir"], m["gpu"], m["how"]) for m in members] == [
        ("nvidia-h100-80gb-hbm3", "NVIDIA H100 80GB HBM3", "gpu-less"),
        ("nvidia-h200", "NVIDIA H200", "gpu-less"),
    ]
    for m in members:
        record = json.loads((fleet_warm.out / m["dir"] / ".tcm-producer.json").read_text())
        assert record["gpus"] == [m["gpu"]] and record["targets"] == ["cuda:90"]
        assert record["triton_version"] == runtime["triton"]
    assert [g["gpu"] for g in fleet_warm.result.to_dict()["gpus"]] == [
        "NVIDIA H100 80GB HBM3", "NVIDIA H200"
    ]  # fmt: skip


def test_patches_are_undone_even_after_an_error(cuda_python: str, profile: Path) -> None:
    code = f"""
import json, torch
from torch._dynamo import device_interface as di
from torch._inductor import codecache, compile_fx, constant_folding
from torch._inductor.runtime import triton_heuristics, triton_helpers
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental import proxy_tensor
from triton.runtime.driver import driver
from tcmtasks.gpuprofile import load
from tcmtasks.warm import gpuless

sdpa = torch.ops.aten.scaled_dot_product_attention.default
def snapshot():
    return [id(x) for x in (
        torch.cuda._lazy_init, torch.cuda.get_device_properties, torch.cuda.current_device,
        di.caching_worker_device_properties, driver._active, triton_helpers.set_driver_to_gpu,
        proxy_tensor.unset_fake_temporarily, constant_folding.ConstantFolder.run,
        codecache.extract_tensor_metadata_for_cache_key, compile_fx.compile_fx,
        triton_heuristics.CachingAutotuner._make_launchers,
    )] + sorted(map(str, sdpa.py_kernels)) + [
        repr(di.CudaInterface.__dict__.get(k)) for k in ("is_available", "get_device_properties")
    ] + [id(FakeTensorMode.__dict__.get("avoid_device_init")),
         torch._inductor.config.compile_threads]

before = snapshot()
try:
    with gpuless.patched(load({str(profile)!r})) as names:
        inside = {{
            "name": torch.cuda.get_device_name(), "cap": list(torch.cuda.get_device_capability()),
            "available": torch.cuda.is_available(), "interface": di.CudaInterface.is_available(),
            "patches": len(names), "threads": torch._inductor.config.compile_threads,
        }}
        raise KeyboardInterrupt
except KeyboardInterrupt:
    pass
after = snapshot()
try:
    torch.cuda.get_device_name()
    name_after = "answered"
except Exception as exc:
    name_after = type(exc).__name__
print(json.dumps({{"inside": inside, "restored": before == after, "name_after": name_after}}))
"""
    out = subprocess.run(
        [cuda_python, "-c", code], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["inside"]["name"] == "NVIDIA H200" and r["inside"]["cap"] == [9, 0]
    # torch keeps saying there is no GPU (FakeTensorMode's no-device path); Dynamo's
    # interface, which gates Triton codegen, says there is
    assert r["inside"]["available"] is False and r["inside"]["interface"] is True
    assert r["inside"]["patches"] >= 20
    assert r["inside"]["threads"] == 1  # kernels compile where the patches are, not in workers
    assert r["restored"], "a patch outlived the block"
    assert r["name_after"] == "RuntimeError"  # back to: no driver here


def _tcm(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcmtasks.cli", *args],
        env={**_env(), **env}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_a_profile_of_another_torch_build_is_refused_before_compiling(
    cuda_python: str, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    p = _tcm(["warm", "--backend", "torch", "--model", "tiny-opt", "--gpu-profile", str(H200),
              "--python", cuda_python, "-o", str(out)])  # fmt: skip
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "cannot warm for NVIDIA H200: it needs torch 2.11.0+cu130" in err[0]
    assert "tcm gpu --save-profile" in err[0]
    assert not out.exists()


def test_another_transformers_is_refused(cuda_python: str, profile: Path, tmp_path: Path) -> None:
    """The model's code is the graph: transformers 5.17 passes OPT a boolean mask where 5.24
    says is_causal (seen on the GPU machine and here), so the versions must match too."""
    p = load(profile)
    if p.libraries.get("transformers") == "5.17.0":
        pytest.skip("the test interpreter has transformers 5.17.0 itself")
    p.libraries = {"transformers": "5.17.0"}
    other = save(p, tmp_path / "other.json")
    r = _tcm(["warm", "--backend", "torch", "--model", "tiny-opt", "--gpu-profile", str(other),
              "--python", cuda_python, "-o", str(tmp_path / "o")])  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "transformers 5.17.0" in r.stderr and "cannot warm for NVIDIA H200" in r.stderr


def test_attention_the_profile_did_not_record_is_refused(
    cuda_python: str, profile: Path, tmp_path: Path
) -> None:
    p = load(profile)
    p.sdp_choices = {}
    partial = save(p, tmp_path / "partial.json")
    r = _tcm(["warm", "--backend", "torch", "--model", "tiny-opt", "--gpu-profile", str(partial),
              "--python", cuda_python, "-o", str(tmp_path / "o")])  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "not a case the GPU profile recorded" in r.stderr
    assert "warm this model on the GPU" in r.stderr


def test_max_autotune_needs_the_gpu(cuda_python: str, profile: Path, tmp_path: Path) -> None:
    r = _tcm(["warm", "--backend", "torch", "--model", "tiny-opt", "--gpu-profile", str(profile),
              "--python", cuda_python, "-o", str(tmp_path / "o")],
             TORCHINDUCTOR_MAX_AUTOTUNE="1")  # fmt: skip
    assert r.returncode == 2 and "max-autotune" in r.stderr, r.stderr


def test_two_shapes_are_refused_before_torch_starts(tmp_path: Path) -> None:
    r = _tcm(["warm", "--backend", "torch", "--model", "tiny-opt", "--gpu-profile", str(H200),
              "--batch", "1,2", "-o", str(tmp_path / "o")])  # fmt: skip
    assert r.returncode == 2 and "dynamic shapes" in r.stderr and "--dynamic" in r.stderr


def _tiny_opt_runs(extra: list[str], profile: Path, python: str, out: Path) -> list[dict]:
    """``tcm warm`` of tiny-opt for ``profile`` without a GPU: its runs' reports."""
    r = _tcm(["warm", "--backend", "torch", "--model", "tiny-opt", *extra, "--gpu-profile",
              str(profile), "--python", python, "-o", str(out), "--json"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads([x for x in r.stdout.splitlines() if x.startswith("{")][-1])["runs"]


def test_dynamic_warms_four_shapes_into_one_graph(
    cuda_python: str, profile: Path, tmp_path: Path
) -> None:
    """torch.compile(dynamic=True): the first call compiles a graph with symbolic sizes, and
    the other shapes (none of size 1, which torch would specialise) run on it, compiling
    nothing more: one FX graph and one AOTAutograd entry on disk for four shapes."""
    out = tmp_path / "o"
    runs = _tiny_opt_runs(["--dynamic", "--batch", "2,4", "--seq", "32,64"], profile,
                          cuda_python, out)  # fmt: skip
    assert [(x["batch"], x["seq"]) for x in runs] == [(2, 32), (2, 64), (4, 32), (4, 64)]
    assert [(x["fx_graphs"], x["aot_graphs"]) for x in runs] == [(1, 1)] + [(0, 0)] * 3
    cache = out / "nvidia-h200"
    assert len([p for p in cache.glob("fxgraph/*/*") if p.is_dir()]) == 1
    assert len([p for p in cache.glob("aotautograd/*") if p.is_dir()]) == 1


def _calls(
    shapes: str, profile: Path, python: str, inductor: Path, *extra: str
) -> list[tuple[int, int]]:
    """One process of the warm's own child calling ``shapes`` in order on ``inductor``, as a
    workload would: (FX-graph misses, AOTAutograd saves) per call, from Inductor's counters."""
    r = subprocess.run(
        [python, "-m", "tcmtasks.warm.torch_backend", "--config",
         str(REPO / "tcmtasks" / "data" / "models" / "tiny-opt"), "--shapes", shapes,
         "--gpu-profile", str(profile), *extra],
        env={**_env(), "CUDA_VISIBLE_DEVICES": "", "TORCHINDUCTOR_CACHE_DIR": str(inductor)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    runs = [json.loads(x) for x in r.stdout.splitlines() if x.startswith('{"dtype"')]
    return [(x["fx_graphs"], x["aot_graphs"]) for x in runs]


def test_any_order_warms_every_graph_another_order_compiles(
    cuda_python: str, profile: Path, tmp_path: Path
) -> None:
    """--any-order: a process per ordered pair (1x32, 2x32 and 2x32, 1x32). A process calling
    2x32, 1x32, then 4x32 (not listed, after a listed shape) then compiles nothing; calling
    4x32 first compiles its static graph (the check can fail)."""
    out = tmp_path / "o"
    runs = _tiny_opt_runs(["--any-order", "--batch", "1,2", "--seq", "32"], profile,
                          cuda_python, out)  # fmt: skip
    assert [(x["batch"], x["seq"]) for x in runs] == [(1, 32), (2, 32), (2, 32), (1, 32)]
    cache = out / "nvidia-h200"
    assert _calls("2x32,1x32,4x32", profile, cuda_python, cache) == [(0, 0)] * 3
    assert _calls("4x32,1x32", profile, cuda_python, cache)[0] == (1, 1)


def test_dynamic_with_a_size_of_one_warms_each_ordered_pair(
    cuda_python: str, profile: Path, tmp_path: Path
) -> None:
    """--dynamic over batch 1 and 2: torch specialises the 1, and which graph it makes for it
    depends on whether the symbolic graph came first (OPT-125m, docs/cache-formats.md), so the
    warm runs both orders; a process calling 2x32, 1x32, 4x32 then compiles nothing."""
    out = tmp_path / "o"
    runs = _tiny_opt_runs(["--dynamic", "--batch", "1,2", "--seq", "32"], profile,
                          cuda_python, out)  # fmt: skip
    assert [(x["batch"], x["seq"]) for x in runs] == [(1, 32), (2, 32), (2, 32), (1, 32)]
    calls = _calls("2x32,1x32,4x32", profile, cuda_python, out / "nvidia-h200", "--dynamic")
    assert calls == [(0, 0)] * 3


def test_a_cpu_only_torch_is_refused(tmp_path: Path) -> None:
    """tcm's own test interpreter has the CPU build (the test extra's torch): its version
    never matches a node's. Refused before transformers is even imported."""
    import torch

    assert torch.version.cuda is None, "the test extra installs the CPU build of torch"
    r = _tcm(["warm", "--backend", "torch", "--model", "tiny-opt", "--gpu-profile", str(H200),
              "--python", sys.executable, "-o", str(tmp_path / "o")])  # fmt: skip
    assert r.returncode == 2 and f"has torch {torch.__version__}" in r.stderr, r.stderr


def test_the_replay_refuses_a_torch_it_does_not_support(
    cuda_python: str, profile: Path, tmp_path: Path
) -> None:
    """A profile whose runtime matches but whose torch tcm's patches were not written for:
    the child names it before compiling (here the test interpreter's torch, marked CPU)."""
    code = (
        "from tcmtasks.warm import gpuless\n"
        "try:\n    gpuless.check_supported('2.14.1+cpu', None)\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
    )
    r = subprocess.run([cuda_python, "-c", code], env=_env(), capture_output=True, text=True)
    assert "CPU-only build" in r.stdout, r.stdout + r.stderr


def test_gpu_profile_is_for_the_torch_and_command_backends(tmp_path: Path) -> None:
    r = _tcm(["warm", "--backend", "triton", "--kernels", "tutorials", "--gpu-profile",
              str(H200), "-o", str(tmp_path / "o")])  # fmt: skip
    assert r.returncode == 2 and "--gpu-profile is for the torch and command backends" in r.stderr


def test_recording_a_profile_needs_the_gpu(cuda_python: str, tmp_path: Path) -> None:
    target = tmp_path / "p.json"
    r = _tcm(["gpu", "--save-profile", str(target), "--python", cuda_python])
    assert r.returncode == 5, r.stderr
    assert "recorded on the GPU it describes" in r.stderr
    assert not target.exists()


def test_recording_a_profile_needs_a_cuda_build(tmp_path: Path) -> None:
    import torch

    assert torch.version.cuda is None, "the test extra installs the CPU build of torch"
    target = tmp_path / "p.json"
    r = _tcm(["gpu", "--save-profile", str(target)])
    assert r.returncode == 5, r.stderr
    assert "CPU or ROCm build" in r.stderr and not target.exists()


def test_a_bad_profile_file_is_refused_before_torch_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(UsageError, match="not JSON"):
        ops.warm(ops.TorchWarm("tiny-opt", gpu_profiles=[bad]), tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"targets": ["cuda:90"]}', "not a GPU profile (no format field"),
        ('{"format": 7}', "GPU profile format 7, this tcm reads format 1"),
        ('{"format": 1, "name": "x"}', "GPU profile lacks capability"),
        ("[1, 2]", "not a GPU profile"),
        ("model: opt\n", "not JSON"),
    ],
)
def test_a_file_that_is_not_a_profile_is_one_line(
    tmp_path: Path, content: str, message: str
) -> None:
    bad = tmp_path / "p.json"
    bad.write_text(content)
    r = _tcm(["warm", "--backend", "torch", "--model", "tiny-opt", "--gpu-profile", "nvidia-h100",
              "--gpu-profile", str(bad), "-o", str(tmp_path / "o")])  # fmt: skip
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_an_unknown_profile_name_lists_the_shipped_ones(tmp_path: Path) -> None:
    r = _tcm(["warm", "--backend", "torch", "--model", "tiny-opt", "--gpu-profile", "nvidia-h100",
              "--gpu-profile", "nvidia-a100", "-o", str(tmp_path / "o")])  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "no GPU profile 'nvidia-a100'" in r.stderr and "nvidia-h100, nvidia-h200" in r.stderr
    assert not (tmp_path / "o").exists()


def _h200_of_another_torch(tmp_path: Path) -> Path:
    other = load(H200)
    other.torch = "2.14.1+cu130"
    return save(other, tmp_path / "h200-2.14.json")


def test_one_gpu_twice_with_two_runtimes_is_refused(tmp_path: Path) -> None:
    """One image can say only one thing per GPU name: a node of that GPU runs one runtime."""
    _h200_of_another_torch(tmp_path)
    r = _tcm(["warm", "--backend", "torch", "--model", "tiny-opt", "--gpu-profile", "nvidia-h200",
              "--gpu-profile", str(tmp_path / "h200-2.14.json"),
              "-o", str(tmp_path / "o")])  # fmt: skip
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert "both describe NVIDIA H200, with different runtimes" in line
    assert "torch 2.11.0+cu130" in line and "torch 2.14.1+cu130" in line
    assert not (tmp_path / "o").exists()


def test_profiles_of_two_runtimes_cannot_share_one_warm(tmp_path: Path) -> None:
    _h200_of_another_torch(tmp_path)
    r = _tcm(["warm", "--backend", "torch", "--model", "tiny-opt", "--gpu-profile", "nvidia-h100",
              "--gpu-profile", str(tmp_path / "h200-2.14.json"),
              "-o", str(tmp_path / "o")])  # fmt: skip
    assert r.returncode == 2 and "the GPU profiles name different runtimes" in r.stderr
    assert not (tmp_path / "o").exists()
