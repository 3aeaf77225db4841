"""GPU profiles: reading, writing, refusing bad files, and saying which runtime differs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcmtasks.errors import UsageError
from tcmtasks.gpuprofile import FORMAT, load, runtime_mismatch, save
from tcmtasks.warm.gpuless import check_supported

REPO = Path(__file__).resolve().parent.parent
H200 = next((REPO / "examples" / "gpu-profiles").glob("nvidia-h200-*.json"))


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
    p = load(H200)
    assert runtime_mismatch(p, "2.11.0+cu130", "3.6.0", "cp312", p.triton_key) is None
    torch_line = runtime_mismatch(p, "2.14.1+cu130", "3.6.0", "cp312")
    assert torch_line and "torch 2.11.0+cu130" in torch_line and "torch 2.14.1+cu130" in torch_line
    assert "every key would miss" in torch_line
    py = runtime_mismatch(p, "2.11.0+cu130", "3.6.0", "cp311")
    assert py and "Python cp312" in py and "Python cp311" in py
    build = runtime_mismatch(p, "2.11.0+cu130", "3.6.0", "cp312", "0000000000000000")
    assert build and "another build" in build
    lib = runtime_mismatch(p, "2.11.0+cu130", "3.6.0", "cp312", None, {"transformers": "5.24.0"})
    assert lib and "transformers 5.17.0" in lib and "transformers 5.24.0" in lib
    same = {"transformers": "5.17.0"}
    assert runtime_mismatch(p, "2.11.0+cu130", "3.6.0", "cp312", None, same) is None
    # the H200's torch ships ptxas 13.0.88, which its compiles use: another one misses
    assert p.ptxas == "13.0.88"
    ptxas = runtime_mismatch(p, "2.11.0+cu130", "3.6.0", "cp312", None, same, "12.8.93")
    assert ptxas and "ptxas 13.0.88" in ptxas and "with 12.8.93" in ptxas
    assert runtime_mismatch(p, "2.11.0+cu130", "3.6.0", "cp312", None, same, "13.0.88") is None


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
    """examples/ci/ warms for the shipped profile: it must install what the profile names, or
    the warm refuses (runtime_mismatch)."""
    p = load(H200)
    ci = (REPO / "examples" / "ci" / "torch-warm-without-gpu.yml").read_text()
    version, _, local = p.torch.partition("+")
    assert f"torch=={version}" in ci and f"/whl/{local}" in ci
    assert f'python-version: "{p.python[2]}.{p.python[3:]}"' in ci
    assert f"transformers=={p.libraries['transformers']}" in ci
