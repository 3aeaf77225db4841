"""doit pipelines end to end in a temp copy of the project, and recipe validation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tcmtasks.errors import RecipeError
from tcmtasks.pipeline.recipe import load_recipe
from tcmtasks.resources import builtin_recipes
from tests.conftest import REPO
from tests.trust.conftest import cosign_key_file, write_policy

MINI = """model: mini
warm:
  backend: triton
  kernels: tutorials
targets: [cuda:90]
dedup: true
prune:
  ir: true
image:
  name: tcm/mini
  tag: "{model}-{targets}"
"""


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "mini.yaml").write_text(MINI)
    return root


def doit(root: Path, *args: str, ok: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "doit", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(root), "PYTHONPATH": str(REPO),
             **{k: v for k, v in os.environ.items() if k == "TCM_CI"}},
    )  # fmt: skip
    assert proc.returncode == ok, proc.stdout + proc.stderr
    return proc


def ran(proc) -> list[str]:
    return [line[3:].split(":")[0] for line in proc.stdout.splitlines() if line.startswith(".  ")]


def test_first_run_noop_rerun_param_change_and_tampering(project):
    first = doit(project, "warm_and_ship", "model=mini")
    assert ran(first) == ["warm", "index", "dedup", "prune", "package", "push"]
    package = json.loads((project / "build/mini/package.json").read_text())
    # 14 kernels, and 10 C helpers (cuda_utils and 4 launchers, under both platform keys)
    assert package["entries"] == 24 and package["tag"] == "mini-cuda90"
    prune_dir, warm_dir = project / "build/mini/prune", project / "build/mini/warm"
    assert not list(prune_dir.glob("*/*.ttir")) and len(list(warm_dir.glob("*/*.ttir"))) == 14

    again = doit(project, "warm_and_ship", "model=mini")
    assert ran(again) == [] and again.stdout.count("-- ") == 6

    recipe = project / "pipelines" / "mini.yaml"
    recipe.write_text(MINI.replace("  ir: true", "  ir: true\n  asm: true"))
    changed = doit(project, "warm_and_ship", "model=mini")
    assert ran(changed) == ["prune", "package", "push"]
    assert not list(prune_dir.glob("*/*.ptx"))

    next(warm_dir.glob("*/*.ttgir")).unlink()  # someone tampers with the warmed cache
    tampered = doit(project, "warm_and_ship", "model=mini")
    # warm runs again and rebuilds the same content: its manifest is unchanged, the cascade stops
    assert ran(tampered) == ["warm"]
    assert len(list(warm_dir.glob("*/*.ttgir"))) == 14
    image = json.loads((project / "build/mini/package.json").read_text())["reference"]
    info = json.loads(
        subprocess.run(
            [sys.executable, "-m", "tcmtasks.cli", "inspect", image, "--json"],
            cwd=project,
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        ).stdout
    )
    assert info["entry_count"] == 14 and info["producer"]["backend"] == "triton"  # kernels


def test_push_to_a_registry_signed_and_pinned(project, start_registry, tcm):
    reg = start_registry()
    cosign_key_file(project / "pipelines" / "ci.key", b"ci-pass")
    (project / "pipelines" / "ci.pass").write_text("ci-pass\n")
    (project / "pipelines" / "mini.yaml").write_text(
        MINI + "insecure: true\nsign:\n  sigstore_private_key: ci.key\n  passphrase_file: ci.pass\n"
    )
    ran = doit(project, "warm_and_ship", "model=mini", f"registry={reg.host}")
    push = json.loads((project / "build/mini/push.json").read_text())
    assert push["destination"] == f"docker://{reg.host}/tcm/mini:mini-cuda90"
    assert push["copied"] == 2
    package = json.loads((project / "build/mini/package.json").read_text())
    assert push["digest"] == package["digest"]
    assert push["pinned"] == f"docker://{reg.host}/tcm/mini@{package['digest']}"
    assert f"pin it: {push['pinned']}" in ran.stdout
    assert push["signatures"][0].endswith(f":sha256-{package['digest'][7:]}.sig")
    # a node that requires that key's signature installs the pinned image
    policy = write_policy(
        project / "policy.json",
        docker={f"{reg.host}/tcm": [{"type": "sigstoreSigned",
                                     "keyPath": str(project / "pipelines" / "ci.pub")}]},
        default=[{"type": "reject"}],
    )  # fmt: skip
    got = tcm("pull", push["pinned"], "--insecure-host", reg.host, "--policy", policy,
              "-c", project / "node", "--all")  # fmt: skip
    assert "verified: sigstoreSigned" in got.stderr and "installed 24 entries" in got.stdout


def test_doit_list_and_unknown_model(project):
    listing = doit(project, "list").stdout
    for task in ("warm", "index", "dedup", "prune", "package", "push", "warm_and_ship"):
        assert task in listing
    bad = doit(project, "warm_and_ship", "model=nope", ok=3)
    assert "unknown model 'nope'; known: mini" in bad.stderr


def test_invalid_recipe_reports_every_error_with_position(project):
    (project / "pipelines" / "broken.yaml").write_text(
        "model: broken\nwarm:\n  backend: triton\ntargets: [tpu:v5]\ndedup: 'yes'\n"
        "image:\n  name: Bad Name\n  colour: red\n"
    )
    proc = doit(project, "list", ok=3)
    err = proc.stderr
    assert err.startswith("ERROR:") and "Traceback" not in err
    for where in (
        "broken.yaml:3:3: $.warm: 'kernels' is a required property",
        "broken.yaml:4:11: $.targets[0]",
        "broken.yaml:5:8: $.dedup",
        "broken.yaml:7:9: $.image.name",
        "broken.yaml:7:3: $.image: Additional",
    ):
        assert where in err, err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: x\nwarm: {backend: triton, kernels: k.py}\n", "'image' is a required"),
        ("model: x\nwarm: {backend: tpu}\nimage: {name: a}\n", "$.warm.backend"),
        ("model: x\nwarm: {backend: command}\nimage: {name: a}\n", "'command' is a required"),
        (
            "model: x\nwarm: {backend: torch, model: m, batch: [0]}\nimage: {name: a}\n",
            "$.warm.batch[0]",
        ),
        (
            "model: x\nwarm: {backend: triton, kernels: k, dynamic: true}\nimage: {name: a}\n",
            "$.warm.backend",
        ),
        ("model: x\nwarm: [oops\n", "not valid YAML"),
        (
            "model: other\nwarm: {backend: triton, kernels: k}\nimage: {name: a}\n",
            "must match the file name",
        ),
    ],
)
def test_schema_error_classes(tmp_path, text, message):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert message in str(info.value)
    assert f"{path}:" in str(info.value) or "must match" in str(info.value)


def test_a_dynamic_torch_recipe_becomes_a_dynamic_warm(tmp_path):
    from tcmtasks import ops
    from tcmtasks.pipeline.stages import warm_spec

    path = tmp_path / "x.yaml"
    path.write_text("model: x\nwarm: {backend: torch, model: tiny-opt, batch: [2, 4], dynamic: "
                    "true}\nimage: {name: a}\n")  # fmt: skip
    spec = warm_spec(load_recipe(path))
    assert isinstance(spec, ops.TorchWarm) and spec.dynamic and spec.batch == [2, 4]


def test_the_shipped_opt_recipe_names_the_fleet_tcm_ships_profiles_for():
    from tcmtasks.gpuprofile import load
    from tcmtasks.pipeline.stages import gpu_profile_paths

    recipe = load_recipe(builtin_recipes() / "opt-125m.yaml")
    names = {load(p).name for p in gpu_profile_paths(recipe)}
    assert names == {"NVIDIA H100 80GB HBM3", "NVIDIA H200"}


def test_gpu_profiles_are_only_for_the_torch_backend(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(
        "model: x\nwarm: {backend: triton, kernels: k, gpu_profiles: [p.json]}\nimage: {name: a}\n"
    )
    with pytest.raises(RecipeError, match="torch"):
        load_recipe(path)


def test_libcuda_dirs_are_for_the_triton_backend_and_reach_its_warm(tmp_path):
    from tcmtasks.pipeline.stages import warm_spec

    path = tmp_path / "x.yaml"
    path.write_text(
        "model: x\nwarm: {backend: torch, model: tiny-opt, libcuda_dirs: [/lib]}\n"
        "image: {name: a}\n"
    )
    with pytest.raises(RecipeError, match="triton"):
        load_recipe(path)
    path.write_text(
        "model: x\ntargets: [cuda:90]\nwarm: {backend: triton, kernels: tutorials,\n"
        "  libcuda_dirs: [/usr/local/nvidia/lib64, /lib]}\nimage: {name: a}\n"
    )
    spec = warm_spec(load_recipe(path))
    assert spec.libcuda_dirs == ["/usr/local/nvidia/lib64", "/lib"]  # type: ignore[union-attr]


def test_an_unknown_profile_name_lists_the_known_ones(project):
    (project / "pipelines" / "x.yaml").write_text(
        "model: x\nwarm: {backend: torch, model: tiny-opt, gpu_profiles: [nvidia-a100]}\n"
        "image: {name: a}\n"
    )
    r = doit(project, "list", ok=3)
    assert "no GPU profile 'nvidia-a100'" in r.stderr and "nvidia-h100, nvidia-h200" in r.stderr


def test_shipped_recipes_are_valid():
    shipped = sorted(builtin_recipes().glob("*.yaml"))
    assert len(shipped) >= 3
    for path in shipped:
        assert load_recipe(path).model == path.stem


def test_the_warm_stage_and_tcm_warm_produce_the_same_cache(project, tmp_path):
    """The stage and the command call one operation: same keys, same producer record."""
    doit(project, "warm", "model=mini")
    stage = project / "build/mini/warm"
    cli = tmp_path / "cli-warm"
    subprocess.run(
        [sys.executable, "-m", "tcmtasks.cli", "warm", "--kernels", "tutorials",
         "--target", "cuda:90", "-o", str(cli)],
        cwd=project, check=True, capture_output=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(project), "PYTHONPATH": str(REPO)},
    )  # fmt: skip

    def keys(d: Path) -> set[str]:
        return {p.name for p in d.iterdir() if any(p.glob("__grp__*.json"))}

    assert keys(stage) == keys(cli) and len(keys(cli)) == 14
    record = json.loads((stage / ".tcm-producer.json").read_text())
    assert record == json.loads((cli / ".tcm-producer.json").read_text())
    assert record["backend"] == "triton" and record["triton_version"] == "3.6.0"


GPU_RECIPE = """model: gpu-model
warm:
  backend: torch
  model: opt-125m
image:
  name: tcm/gpu-model
"""


def test_bare_doit_runs_what_this_machine_can_and_names_the_rest(project):
    """A CPU-only machine: the torch recipe is left out of a bare run, with what to run."""
    from tcmtasks.targets import host_targets

    if host_targets()[0]:
        pytest.skip("this machine has a GPU: every recipe runs")
    (project / "pipelines" / "gpu-model.yaml").write_text(GPU_RECIPE)
    plan = doit(project, "dry_run=1").stdout
    assert "build/mini/warm" in plan and "build/gpu-model" not in plan
    assert "not run here: gpu-model" in plan
    assert "doit warm_and_ship model=gpu-model" in plan
    explicit = doit(project, "warm_and_ship", "model=gpu-model", "dry_run=1").stdout
    assert "build/gpu-model/warm" in explicit  # named, it is planned (and fails clearly)


def test_a_fleet_recipe_warms_and_ships_both_gpus_without_a_gpu(project, tmp_path):
    """doit warm_and_ship of a torch recipe naming two GPUs, on this GPU-less machine: one
    warm compiles for each profile, one image holds both GPUs' units (its label counts
    them); a rerun does nothing, a re-recorded profile warms again. A bare run includes it
    (this interpreter has the profiles' runtime)."""
    from tcmtasks.gpuprofile import load, save
    from tests.support.profiles import H100, profile_for, runtime_of
    from tests.support.tools import require_cuda_python

    python = require_cuda_python()
    rt = runtime_of(python)
    h200 = profile_for(rt, project / "pipelines" / "h200.json")
    profile_for(rt, project / "pipelines" / "h100.json", H100)
    (project / "pipelines" / "tiny.yaml").write_text(
        "model: tiny\nwarm:\n  backend: torch\n  model: tiny-opt\n"
        f"  python: {python}\n  gpu_profiles: [h100.json, h200.json]\n"
        "image:\n  name: tcm/tiny\n"
    )
    assert "build/tiny/warm" in doit(project, "dry_run=1").stdout
    first = doit(project, "warm_and_ship", "model=tiny")
    assert ran(first) == ["warm", "index", "dedup", "prune", "package", "push"]
    warmed = project / "build/tiny/warm"
    assert sorted(p.name for p in warmed.iterdir() if p.is_dir()) == [
        "nvidia-h100-80gb-hbm3", "nvidia-h200"
    ]  # fmt: skip
    pkg = json.loads((project / "build/tiny/package.json").read_text())
    # the whole Inductor cache (FX graph, AOTAutograd, code units) beside Triton's kernels
    assert pkg["parts"]["inductor"] >= 3 and pkg["entries"] > 0
    from tcmtasks import ops

    info = ops.inspect(f"oci:{project}/{pkg['reference'][len('oci:') :]}", entries=False)
    assert set(info.gpus) == {"NVIDIA H100 80GB HBM3", "NVIDIA H200"}
    assert all(g["inductor"] >= 3 and g["target"] == "cuda:90" for g in info.gpus.values())
    assert ran(doit(project, "warm_and_ship", "model=tiny")) == []
    again = load(h200)
    again.recorded_by = "recorded again"
    save(again, h200)
    assert ran(doit(project, "warm_and_ship", "model=tiny"))[:1] == ["warm"]


def test_a_runner_without_the_fleets_runtime_says_so_before_compiling(project):
    """This interpreter has the CPU build of torch and Python 3.11: the shipped profiles
    need torch 2.11.0+cu130 on Python 3.12. A bare run leaves the recipe with that line; run
    by name, its warm fails with it, having compiled nothing."""
    (project / "pipelines" / "fleet.yaml").write_text(
        "model: fleet\nwarm:\n  backend: torch\n  model: tiny-opt\n"
        "  gpu_profiles: [nvidia-h100, nvidia-h200]\nimage:\n  name: tcm/fleet\n"
    )
    plan = doit(project, "dry_run=1").stdout
    assert "build/fleet" not in plan
    assert "not run here: fleet: this runner cannot warm for NVIDIA H100 80GB HBM3" in plan
    r = doit(project, "warm_and_ship", "model=fleet", ok=1)
    out = r.stdout + r.stderr
    line = next(x for x in out.splitlines() if "cannot warm for" in x)
    for needed in ("torch 2.11.0+cu130", "Python cp312", "transformers 5.17.0",
                   f"Python cp{sys.version_info.major}{sys.version_info.minor}",
                   "tcm gpu --save-profile"):  # fmt: skip
        assert needed in line, line
    assert "[exit code 2]" in line
    assert not (project / "build/fleet/warm").exists() or not any(
        (project / "build/fleet/warm").iterdir()
    )
