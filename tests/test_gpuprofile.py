"""GPU profiles: reading, writing, refusing bad files, and saying which runtime differs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcmtasks.errors import UsageError
from tcmtasks.gpuprofile import (
    FORMAT,
    WarmRuntime,
    find,
    fleet_mismatch,
    load,
    load_fleet,
    runtime_mismatch,
    save,
    shipped,
)
from tcmtasks.warm.gpuless import check_supported

REPO = Path(__file__).resolve().parent.parent
H200 = shipped()["nvidia-h200"]
H100 = shipped()["nvidia-h100"]
NODE = WarmRuntime(
    "2.11.0+cu130", "3.6.0", "cp312", "bd4757a49ddb4e61", "13.0.88", {"transformers": "5.17.0"}
)


def test_the_shipped_h200_profile_loads_with_what_a_compile_needs() -> None:
    p = load(H200)
    assert p.name == "NVIDIA H200" and p.capability == (9, 0)
    assert str(p.triton_target) == "cuda:90"
    assert p.props["multi_processor_count"] == 132
    assert p.triton_props["max_shared_mem"] == 232448
    assert (p.torch, p.triton, p.python) == ("2.11.0+cu130", "3.6.0", "cp312")
    # every attention case was recorded, each with torch's backend name
    assert len(p.sdp_choices) == 768
    assert set(p.sdp_choices.values()) <= {
        "MATH", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"
    }  # fmt: skip


def test_save_then_load_gives_the_same_profile(tmp_path: Path) -> None:
    p = load(H200)
    out = save(p, tmp_path / "copy.json")
    assert load(out) == p
    assert not list(tmp_path.glob(".*.tmp"))  # written whole, by rename


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a GPU profile"),
        (json.dumps({"format": FORMAT + 1}), f"this tcm reads format {FORMAT}"),
        (json.dumps({"format": FORMAT, "name": "x"}), "lacks capability"),
    ],
)
def test_a_bad_profile_is_refused_with_what_is_wrong(
    tmp_path: Path, text: str, message: str
) -> None:
    f = tmp_path / "p.json"
    f.write_text(text)
    with pytest.raises(UsageError, match=message):
        load(f)


def test_a_malformed_field_is_named(tmp_path: Path) -> None:
    data = load(H200).to_dict()
    data["capability"] = ["nine"]
    f = tmp_path / "p.json"
    f.write_text(json.dumps(data))
    with pytest.raises(UsageError, match="malformed GPU profile"):
        load(f)


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read GPU profile"):
        load(tmp_path / "nope.json")


def test_runtime_mismatch_names_the_first_difference() -> None:
    import dataclasses

    p = load(H200)
    assert p.runtime == NODE and runtime_mismatch(p, NODE) is None

    def differ(**changes: object) -> str:
        found = runtime_mismatch(p, dataclasses.replace(NODE, **changes))
        assert found is not None
        return found

    torch_line = differ(torch="2.14.1+cu130")
    assert "torch 2.11.0+cu130" in torch_line and "torch 2.14.1+cu130" in torch_line
    assert "every key would miss" in torch_line
    py = differ(python="cp311")
    assert "Python cp312" in py and "Python cp311" in py
    assert "another build" in differ(triton_key="0000000000000000")
    lib = differ(libraries={"transformers": "5.24.0"})
    assert "transformers 5.17.0" in lib and "transformers 5.24.0" in lib
    assert "transformers none" in differ(libraries={})
    # the H200's torch ships ptxas 13.0.88, which its compiles use: another one misses
    ptxas = differ(ptxas="12.8.93")
    assert "ptxas 13.0.88" in ptxas and "with 12.8.93" in ptxas
    # a field the producer cannot tell (no triton_key, no ptxas) is not held against it
    assert runtime_mismatch(p, dataclasses.replace(NODE, triton_key=None, ptxas=None)) is None


def test_the_shipped_profiles_are_the_two_gpus_of_one_runtime() -> None:
    assert set(shipped()) >= {"nvidia-h100", "nvidia-h200"}
    h100, h200 = load(H100), load(H200)
    assert (h100.name, h200.name) == ("NVIDIA H100 80GB HBM3", "NVIDIA H200")
    assert h100.runtime == h200.runtime == NODE
    assert h100.slug == "nvidia-h100-80gb-hbm3" and h200.slug == "nvidia-h200"
    # what differs is what the FX-graph key hashes of the device: its name (and properties)
    assert h100.props["name"] != h200.props["name"]
    assert h100.props["multi_processor_count"] == h200.props["multi_processor_count"] == 132


def test_the_shipped_profiles_carry_the_gpu_machines_inductor_settings() -> None:
    """The GPU machines set CXX=/opt/gcc/bin/g++, which Inductor's key hashes as
    ``cpp.cxx``: a runner replays it (tests/warm/test_gpuless.py shows the keys follow)."""
    for p in (load(H100), load(H200)):
        assert p.inductor_config["cpp.cxx"] == [None, "/opt/gcc/bin/g++"]
        assert len(p.inductor_config) > 400  # every setting the key hashes, not a pick


def test_recording_takes_every_setting_the_key_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """As torch's FX-graph key reads them (the CPU torch under test stands in for the GPU's:
    the settings are read from the config module, not from the device)."""
    torch = pytest.importorskip("torch")
    from torch._inductor import config

    from tcmtasks.warm.profile_child import record_inductor_config

    got = record_inductor_config(torch)
    hashed = config.save_config_portable(ignore_private_configs=False)
    assert set(got) <= set(hashed) and len(got) >= len(hashed) - 5
    assert got["cpp.cxx"] == list(config.cpp.cxx)
    assert json.loads(json.dumps(got)) == got


def test_find_takes_a_file_a_file_beside_the_recipe_or_a_shipped_name(tmp_path: Path) -> None:
    assert find("nvidia-h100") == H100
    mine = save(load(H200), tmp_path / "mine.json")
    assert find(str(mine)) == mine.resolve()
    assert find("mine.json", base=tmp_path) == mine.resolve()
    with pytest.raises(UsageError, match="tcm ships nvidia-h100, nvidia-h200"):
        find("nvidia-a100")


def test_a_fleet_names_each_gpu_once(tmp_path: Path) -> None:
    assert [p.name for p in load_fleet(["nvidia-h100", "nvidia-h200"])] == [
        "NVIDIA H100 80GB HBM3", "NVIDIA H200"
    ]  # fmt: skip
    with pytest.raises(UsageError, match="both describe NVIDIA H200: name it once"):
        load_fleet(["nvidia-h200", str(H200)])


def test_the_fleet_mismatch_says_what_the_gpus_need_and_what_the_runner_has() -> None:
    import dataclasses

    fleet = load_fleet(["nvidia-h100", "nvidia-h200"])
    assert fleet_mismatch(fleet, NODE, "py") is None
    runner = WarmRuntime("2.13.0+cpu", "3.6.0", "cp311", "deafe87b60a26224", "12.8.93",
                         {"transformers": "5.25.0"})  # fmt: skip
    line = fleet_mismatch(fleet, runner, "/usr/bin/python3")
    assert line is not None and "\n" not in line
    assert line.startswith(
        "this runner cannot warm for NVIDIA H100 80GB HBM3, NVIDIA H200: they need "
        "torch 2.11.0+cu130, Triton 3.6.0 (build bd4757a49ddb4e61), Python cp312, "
        "transformers 5.17.0, ptxas 13.0.88; /usr/bin/python3 has torch 2.13.0+cpu, "
        "Triton 3.6.0 (build deafe87b60a26224), Python cp311, transformers 5.25.0, ptxas 12.8.93"
    )
    assert "tcm gpu --save-profile" in line
    other = dataclasses.replace(load(H200), torch="2.14.1+cu130", name="NVIDIA B200")
    two = fleet_mismatch([fleet[0], other], NODE, "py")
    assert two is not None and "name different runtimes" in two and "NVIDIA B200 need" in two


def test_profile_label_says_gpu_arch_and_torch() -> None:
    assert load(H200).label == "NVIDIA H200 (sm_90, torch 2.11.0+cu130)"


@pytest.mark.parametrize(
    ("version", "cuda", "message"),
    [
        ("2.13.0+cpu", None, "CPU-only build"),
        ("2.13.0+cu130", "13.0", "not supported for warming without a GPU"),
        ("3.0.0", "13.0", "supported: 2.11, 2.14"),
    ],
)
def test_unknown_torch_builds_are_refused(version: str, cuda: str | None, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_supported(version, cuda)


@pytest.mark.parametrize("version", ["2.11.0+cu130", "2.14.1+cu130", "2.14.0"])
def test_supported_torch_builds_pass(version: str) -> None:
    check_supported(version, "13.0")


def test_the_ci_example_installs_the_profiles_runtime() -> None:
    """examples/ci/ warms for the shipped profiles: it must install what they name, or the
    warm refuses (fleet_mismatch)."""
    p = load(H200)
    ci = (REPO / "examples" / "ci" / "torch-warm-without-gpu.yml").read_text()
    version = p.torch.partition("+")[0]
    assert f"torch=={version}" in ci
    assert f'python-version: "{p.python[2]}.{p.python[3:]}"' in ci
    assert f"transformers=={p.libraries['transformers']}" in ci
    assert "doit warm_and_ship model=opt-125m" in ci
