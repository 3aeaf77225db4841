"""The triton warm backend: keys equal to the launch path's, and clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tcmtasks import scan_root
from tests.conftest import REPO, triton_env
from tests.support.cuda_utils import cuda_utils_lookup
from tests.support.tools import require_tools, require_triton39_python
from tests.support.variants import age

TUTORIALS = REPO / "tcmtasks" / "data" / "kernels" / "tutorials.py"


def test_warm_keys_equal_the_launch_path_keys(tcm, tmp_path):
    out = tmp_path / "warmed"
    report = json.loads(
        tcm(
            "warm",
            "--backend",
            "triton",
            "--kernels",
            TUTORIALS,
            "--target",
            "cuda:90",
            "-o",
            out,
            "--json",
        ).stdout
    )
    assert report["variants"] == 14 and report["new_entries"] == 14
    warmed = {e.key for e in scan_root(out) if e.kind == "kernel"}
    assert len(warmed) == 14
    launched = tmp_path / "launched"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.launch_path", str(TUTORIALS), "cuda:90"],
        env=triton_env(launched),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("launched past the compile") == 14  # it really tried to launch
    assert {e.key for e in scan_root(launched) if e.kind == "kernel"} == warmed
    names = sorted(e.name for e in scan_root(out) if e.kind == "kernel")
    assert names.count("matmul_kernel") == 8  # the autotune configs, expanded
    fp16 = [
        e
        for e in scan_root(out)
        if e.name == "add_kernel" and "!tt.ptr<f16>" in (e.path / "add_kernel.ttir").read_text()
    ]
    assert len(fp16) == 1  # the fp16 stand-in compiled as fp16, not fp32
    producer = json.loads((out / ".tcm-producer.json").read_text())
    assert producer["triton_version"] == "3.6.0" and producer["python"].startswith("cp3")


def test_three_targets(tcm, tmp_path):
    out = tmp_path / "warmed"
    tcm(
        "warm",
        "--backend",
        "triton",
        "--kernels",
        TUTORIALS,
        "--target",
        "cuda:80,cuda:90,rocm:gfx942",
        "-o",
        out,
    )
    targets = {str(e.target) for e in scan_root(out) if e.kind == "kernel"}
    assert targets == {"cuda:80", "cuda:90", "hip:gfx942"}
    assert sum(1 for e in scan_root(out) if e.kind == "kernel") == 42


def test_clear_errors(tcm, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import triton\ndef oops(:\n")
    proc = tcm(
        "warm",
        "--backend",
        "triton",
        "--kernels",
        broken,
        "--target",
        "cuda:90",
        "-o",
        tmp_path / "o",
        ok=2,
    )
    assert "failed to import" in proc.stderr and "SyntaxError" in proc.stderr
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    assert (
        "must define KERNELS"
        in tcm(
            "warm",
            "--backend",
            "triton",
            "--kernels",
            empty,
            "--target",
            "cuda:90",
            "-o",
            tmp_path / "o",
            ok=2,
        ).stderr
    )
    assert (
        "unknown backend"
        in tcm(
            "warm",
            "--backend",
            "triton",
            "--kernels",
            TUTORIALS,
            "--target",
            "tpu:v5",
            "-o",
            tmp_path / "o",
            ok=2,
        ).stderr
    )
    assert (
        "needs --target"
        in tcm(
            "warm", "--backend", "triton", "--kernels", TUTORIALS, "-o", tmp_path / "o", ok=2
        ).stderr
    )
    fake = tmp_path / "fake" / "triton"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no triton here')\n")
    proc = tcm(
        "warm",
        "--backend",
        "triton",
        "--kernels",
        TUTORIALS,
        "--target",
        "cuda:90",
        "-o",
        tmp_path / "o",
        ok=5,  # the environment lacks an extra
        extra_env={"PYTHONPATH": f"{fake.parent}:{REPO}"},
    )
    assert "pip install 'tcmtasks[triton]'" in proc.stderr


@pytest.mark.parametrize("backend", ["torch"])
def test_gpu_backends_say_what_they_need(tcm, tmp_path, backend):
    proc = tcm("warm", "--backend", backend, "--model", "opt-125m", "-o", tmp_path / "o", ok=5)
    assert "GPU" in proc.stderr or "pip install 'tcmtasks[torch]'" in proc.stderr


def test_the_warm_leaves_the_c_helpers_triton_looks_up(tcm, tmp_path):
    """cuda_utils and every kernel's launcher, placed by Triton's own compile_module_from_src
    against tcm's libcuda stub: a process that cannot compile C (CC=/bin/false) finds each of
    them in the warmed cache, and misses each in an empty one."""
    out = tmp_path / "warmed"
    report = json.loads(
        tcm("warm", "--backend", "triton", "--kernels", TUTORIALS, "--target", "cuda:90",
            "--target", "hip:gfx942", "-o", out, "--json").stdout
    )  # fmt: skip
    helpers = report["helpers"]
    assert helpers["failed"] is None and "cuda_utils" in helpers["built"]
    assert "libamdhip64.so path" in helpers["skipped"]  # HIP's keys are the node's
    modules = [e for e in scan_root(out) if e.kind == "module"]
    names = sorted(e.name for e in modules)
    # under both keys platform_key() gives: with `file` on PATH ("ELF") and without ("")
    assert names.count("cuda_utils") == 2 and names.count("__triton_launcher") == 8
    bare = tmp_path / "bare-path"  # a PATH without `file`, as in a slim runtime image
    bare.mkdir()
    for cache, expected, path in (
        (out, "found", os.environ["PATH"]),
        (out, "found", str(bare)),
        (tmp_path / "empty", "missed", os.environ["PATH"]),
    ):
        cache.mkdir(exist_ok=True)
        env = {**triton_env(cache), "CC": "/bin/false", "TRITON_LIBCUDA_PATH": "/nonexistent",
               "PATH": path}  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "tests.support.helper_lookups", str(TUTORIALS), "cuda:90"],
            env=env, cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        lookups = json.loads(proc.stdout.strip().splitlines()[-1])
        assert len(lookups) == 15  # cuda_utils and the launcher of each of 14 variants
        assert set(lookups.values()) == {expected}, lookups


def test_helpers_load_where_a_driver_provides_libcuda(tcm, tmp_path):
    """Built against tcm's empty stub, each module still names libcuda.so.1 (a linker that
    defaults to --as-needed would drop it, and on the GPU the load then failed): with a
    stand-in driver that defines the module's cu* symbols on LD_LIBRARY_PATH, Python loads
    every helper module; with no such library none loads."""
    require_tools("nm", "gcc")
    out = tmp_path / "warmed"
    tcm("warm", "--backend", "triton", "--kernels", TUTORIALS, "--target", "cuda:90", "-o", out)
    modules = [f for e in scan_root(out) if e.kind == "module" for f in e.path.glob("*.so")]
    assert len(modules) == 10
    symbols = set()
    for m in modules:
        nm = subprocess.run(["nm", "-D", "--undefined-only", str(m)], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
        symbols |= {line.split()[-1] for line in nm.splitlines() if line.split()[-1][:2] == "cu"}
    assert "cuModuleLoadData" in symbols
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / "fake.c").write_text("".join(f"int {name}(void) {{ return 0; }}\n"
                                           for name in sorted(symbols)))  # fmt: skip
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o",
                    str(driver / "libcuda.so.1"), str(driver / "fake.c")], check=True)  # fmt: skip
    load = ("import importlib.util, sys\n"
            "for path in sys.argv[1:]:\n"
            "    name = path.rsplit('/', 1)[1].split('.')[0]\n"
            "    spec = importlib.util.spec_from_file_location(name, path)\n"
            "    importlib.util.module_from_spec(spec)\n")  # fmt: skip
    paths = [str(m) for m in modules]
    ok = subprocess.run([sys.executable, "-c", load, *paths], capture_output=True, text=True,
                        env={**os.environ, "LD_LIBRARY_PATH": str(driver)})  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    bare = subprocess.run([sys.executable, "-c", load, *paths], capture_output=True, text=True)
    assert bare.returncode != 0 and "libcuda.so.1" in bare.stderr


def test_a_runner_that_cannot_build_the_helpers_says_so_once_and_warms(tcm, tmp_path):
    """No working C compiler on the runner (CC=/bin/false): the kernels are warmed, the warm
    exits 0, and one line says the node will build the helpers itself."""
    out = tmp_path / "warmed"
    proc = tcm("warm", "--backend", "triton", "--kernels", TUTORIALS, "--target", "cuda:90",
               "-o", out, extra_env={"CC": "/bin/false"})  # fmt: skip
    assert proc.stderr.count("could not be built here") == 1, proc.stderr
    assert "the node will build them" in proc.stderr
    kinds = [e.kind for e in scan_root(out)]
    assert kinds.count("kernel") == 14 and "module" not in kinds


def test_triton_39_keys_its_helpers_by_the_nodes_libcuda_dir(tcm, tmp_path):
    """Triton 3.8+ hashes the build's dirs (the node's libcuda dir among them) into a helper's
    key: without --libcuda-dir the warm says why it built none; with it, 3.9's own lookup
    finds cuda_utils on a node whose ldconfig lists those dirs, and misses it elsewhere."""
    python = require_triton39_python()
    bare = tmp_path / "bare"
    got = json.loads(
        tcm("warm", "--backend", "triton", "--kernels", TUTORIALS, "--target", "cuda:90",
            "-o", bare, "--python", python, "--json").stdout
    )["helpers"]  # fmt: skip
    assert got["built"] == [] and "libcuda.so.1 dirs" in got["skipped"]
    assert not [e for e in scan_root(bare) if e.kind == "module"]
    out = tmp_path / "warmed"
    got = json.loads(
        tcm("warm", "--backend", "triton", "--kernels", TUTORIALS, "--target", "cuda:90",
            "-o", out, "--python", python, "--libcuda-dir", "/usr/local/nvidia/lib64",
            "--libcuda-dir", "/lib", "--json").stdout
    )["helpers"]  # fmt: skip
    assert got["built"] == ["cuda_utils"] and got["failed"] is None  # 3.9 compiles no launcher
    # a node whose ldconfig lists both dirs, in that order (as the H200 machine's does)
    assert cuda_utils_lookup(python, out, ["/usr/local/nvidia/lib64", "/lib"]) == "found"
    assert cuda_utils_lookup(python, out, ["/usr/local/nvidia/lib64"]) == "missed"
    assert cuda_utils_lookup(python, out, ["/usr/lib64"]) == "missed"
    refused = tcm("warm", "--backend", "torch", "--model", "opt-125m", "-o", tmp_path / "t",
                  "--libcuda-dir", "/x", ok=2)  # fmt: skip
    assert "GPU profile" in refused.stderr


def test_helpers_ship_restore_and_survive_gc(tcm, tmp_path):
    """Packaged with the kernels, restored for the same Python (and skipped, with the reason,
    for another), found there by Triton's own lookups, never evicted by gc, and counted by
    tcm track: a helper built on the node is a compile."""
    out = tmp_path / "warmed"
    tcm("warm", "--backend", "triton", "--kernels", TUTORIALS, "--target", "cuda:90", "-o", out)
    tcm("package", out, f"oci:{tmp_path / 'img'}:v1")
    info = json.loads(tcm("inspect", f"oci:{tmp_path / 'img'}:v1", "--json").stdout)
    assert info["entry_count"] == 14  # MCV's label and "triton" list: the kernels alone
    assert (
        sorted(h["name"] for h in info["helpers"]) == ["__triton_launcher"] * 8 + ["cuda_utils"] * 2
    )  # their own list, which inspect shows
    judged = json.loads(
        tcm("inspect", f"oci:{tmp_path / 'img'}:v1", "--json", "--python", sys.executable).stdout
    )
    assert [h["skip"] for h in judged["helpers"]] == [None] * 10  # built for this Python
    assert (
        "C helpers __triton_launcher x8, cuda_utils x2"
        in tcm("inspect", f"oci:{tmp_path / 'img'}:v1").stdout
    )
    node = tmp_path / "node"
    got = tcm("extract", f"oci:{tmp_path / 'img'}:v1", "-c", node, "--all")
    assert "installed 24 entries" in got.stdout  # 14 kernels; cuda_utils, 4 launchers, twice
    env = {**triton_env(node), "CC": "/bin/false", "TRITON_LIBCUDA_PATH": "/nonexistent"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.helper_lookups", str(TUTORIALS), "cuda:90"],
        env=env, cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert set(json.loads(proc.stdout.strip().splitlines()[-1]).values()) == {"found"}
    other = tcm("extract", f"oci:{tmp_path / 'img'}:v1", "-c", tmp_path / "n2", "--all",
                "--triton", "3.6.0", "--dry-run", "--json")  # fmt: skip
    assert json.loads(other.stdout)["kept"]  # (a version names no ABI: helpers kept)
    age(node, 3600)  # (entries written seconds ago may still be in progress: gc keeps them)
    pruned = node.parent / "pruned"
    shutil.copytree(node, pruned)
    tcm("prune", "-c", pruned, "--full", "--older-than", "1m", "-y")  # every entry old enough
    left = {e.name for e in scan_root(pruned) if e.kind in ("kernel", "module")}
    assert left == {"cuda_utils", "__triton_launcher"}  # prune selects kernels alone
    tcm("gc", "-c", node, "--max-size", "1K", "-y")
    left = {e.name for e in scan_root(node) if e.kind in ("kernel", "module")}
    assert left == {"cuda_utils", "__triton_launcher"}  # kernels evicted, helpers kept

    ask = (
        "from tcmtasks.warm.helpers import libcuda_for_building\n"
        "from triton.backends.nvidia import driver\n"
        "with libcuda_for_building():\n"
        "    try:\n        driver.CudaUtils()\n    except ImportError:\n        pass\n"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    built = tcm("track", "-c", empty, "--require-hits", "--json", "--", sys.executable, "-c",
                ask, ok=1, extra_env={"PYTHONPATH": str(REPO)})  # fmt: skip
    stats = json.loads(built.stdout)
    assert stats["helpers_built"] == ["cuda_utils"] and not stats["compiled_nothing"]
    assert stats["helper_dirs"] == [str(empty)]  # where the node looked
    found = tcm("track", "-c", out, "--require-hits", "--json", "--", sys.executable, "-c", ask,
                extra_env={"PYTHONPATH": str(REPO)})  # fmt: skip
    stats = json.loads(found.stdout)
    assert stats["helper_hits"] == 1 and stats["helpers_built"] == []


def test_launchers_of_an_inductor_cache_also_reach_the_plain_triton_cache(
    warmed_inductor, tcm, tmp_path
):
    """A node's main process may ask its plain Triton cache for a kernel's launcher (Inductor
    sets TRITON_CACHE_DIR only in CachingAutotuner.__init__, which pickled autotuners skip):
    C helpers in an Inductor cache's triton/0 are restored there and to the plain cache."""
    helpers = tmp_path / "helpers"
    tcm("warm", "--backend", "triton", "--kernels", TUTORIALS, "--target", "cuda:90", "-o",
        helpers)  # fmt: skip
    inductor = tmp_path / "inductor"  # a torch.compile cache, with those kernels beside it
    shutil.copytree(warmed_inductor, inductor)
    shutil.copytree(helpers, inductor / "triton" / "0", dirs_exist_ok=True)
    launchers = [e for e in scan_root(helpers) if e.name == "__triton_launcher"]
    assert len(launchers) == 8
    tcm("package", inductor, f"oci:{tmp_path / 'img'}:v1")
    node = tmp_path / "node"
    tcm("extract", f"oci:{tmp_path / 'img'}:v1", "-c", node / "triton", "--inductor-dir",
        node / "inductor", "--all")  # fmt: skip
    for cache in (node / "triton", node / "inductor" / "triton" / "0"):
        got = {e.key for e in scan_root(cache) if e.name == "__triton_launcher"}
        assert got == {e.key for e in launchers}, cache
