"""The model families people serve (issue 27), warmed without a GPU for the H100's profile:
Llama-3.2, Qwen2.5, Mistral, Gemma-2 and Phi-3, each a shipped config.json with its real
widths, heads, KV heads, vocab and rope settings and 2 layers.

Four of the five use grouped-query attention, whose backend choices a profile holds since
2026-12-07 (``record_sdp_choices``): the shipped H100 profile's were recorded on an H100 that
day (where the plain case picks memory-efficient attention, the grouped-query one picks the
math path: 352 of 768 cases); the shipped H200 profile has none yet. That the graphs these
warms write are the GPU's is for the GPU proof (bench/gpu_session_families.sh); what these
tests show is that each family's forward runs under the GPU-less replay and writes FX-graph,
AOTAutograd and sm_90 Triton entries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tcmtasks.cache.entries import EntryKind, scan_root
from tcmtasks.gpuprofile import load, save
from tcmtasks.resources import model_dir
from tcmtasks.targets import Target
from tests.support.profiles import REPO

FAMILIES = {  # shipped name -> the architecture its config names
    "llama-3.2-1b-2l": "LlamaForCausalLM",
    "qwen2.5-0.5b-2l": "Qwen2ForCausalLM",
    "mistral-7b-v0.1-2l": "MistralForCausalLM",
    "gemma-2-2b-2l": "Gemma2ForCausalLM",
    "phi-3-mini-4k-2l": "Phi3ForCausalLM",
}


@pytest.fixture(scope="module")
def gqa_profile(fleet_warm) -> Path:
    """The shipped H100 profile, re-targeted at the test runtime: it holds the grouped-query
    cases an H100 recorded."""
    p = load(fleet_warm.profiles["h100"])
    assert sum(k.endswith("|gqa") for k in p.sdp_choices) == 768
    return fleet_warm.profiles["h100"]


def _warm(model: str, dtype: str, profile: Path, python: str, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "tcmtasks.cli", "warm", "--backend", "torch", "--model", model,
         "--dtype", dtype, "--gpu-profile", str(profile), "--python", python, "-o", str(out),
         "--json"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][-1])


def test_the_shipped_configs_keep_their_familys_shape() -> None:
    for name, arch in FAMILIES.items():
        cfg = json.loads((model_dir(name) / "config.json").read_text())
        assert cfg["architectures"] == [arch] and cfg["num_hidden_layers"] == 2, name
        assert cfg["vocab_size"] >= 32000 and cfg["hidden_size"] >= 896, name
    gqa = {
        n for n in FAMILIES if _config(n)["num_key_value_heads"] < _config(n)["num_attention_heads"]
    }
    assert gqa == set(FAMILIES) - {"phi-3-mini-4k-2l"}


def _config(name: str) -> dict:
    return json.loads((model_dir(name) / "config.json").read_text())


@pytest.mark.parametrize(
    ("model", "dtype"),
    [
        ("llama-3.2-1b-2l", "bf16"),
        ("qwen2.5-0.5b-2l", "bf16"),
        ("mistral-7b-v0.1-2l", "bf16"),
        ("gemma-2-2b-2l", "fp16"),
        ("phi-3-mini-4k-2l", "fp16"),
    ],
)
def test_each_family_warms_without_a_gpu(
    fleet_warm, gqa_profile: Path, tmp_path: Path, model: str, dtype: str
) -> None:
    out = tmp_path / "o"
    result = _warm(model, dtype, gqa_profile, fleet_warm.python, out)
    (run,) = result["runs"]
    assert run["how"] == "gpu-less" and run["dtype"] == dtype
    assert run["fx_graphs"] == 1 and run["aot_graphs"] == 1
    cache = out / "nvidia-h100-80gb-hbm3"
    assert len([p for p in cache.glob("fxgraph/*/*") if p.is_dir()]) == 1
    assert len([p for p in cache.glob("aotautograd/*") if p.is_dir()]) == 1
    kernels = [e for e in scan_root(cache / "triton" / "0") if e.kind == EntryKind.KERNEL]
    assert kernels and {e.target for e in kernels} == {Target("cuda", "90", 32)}
    assert all(any(f.name.endswith(".cubin") for f in e.files) for e in kernels)


def test_grouped_query_attention_unrecorded_is_one_line(fleet_warm, tmp_path: Path) -> None:
    """A profile without the grouped-query cases (recorded before 2026-12-07) refuses Llama's
    attention in one line that names the case, after its eager code ran on fakes."""
    p = load(fleet_warm.profiles["h200"])
    p.sdp_choices = {k: v for k, v in p.sdp_choices.items() if not k.endswith("|gqa")}
    old = save(p, tmp_path / "old.json")
    proc = subprocess.run(
        [sys.executable, "-m", "tcmtasks.cli", "warm", "--backend", "torch", "--model",
         "llama-3.2-1b-2l", "--gpu-profile", str(old), "--python", fleet_warm.python, "-o",
         str(tmp_path / "o")],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "tried to initialise CUDA" not in proc.stderr
    line = [x for x in proc.stderr.splitlines() if "not a case the GPU profile recorded" in x]
    assert len(line) == 1 and "gqa" in line[0], proc.stderr


def _refused(args: list[str], python: str, out: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "tcmtasks.cli", "warm", "--backend", "torch", *args, "--python",
         python, "-o", str(out)],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and not list(out.glob("*/fxgraph/*"))
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    return line


def test_an_architecture_transformers_lacks_is_one_line(fleet_warm, tmp_path: Path) -> None:
    cfg = {**_config("llama-3.2-1b-2l"), "model_type": "mystery",
           "architectures": ["MysteryForCausalLM"]}  # fmt: skip
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    h200 = str(fleet_warm.profiles["h200"])
    line = _refused(["--model", str(tmp_path / "m"), "--gpu-profile", h200], fleet_warm.python,
                    tmp_path / "o")  # fmt: skip
    assert "does not know the model type 'mystery'" in line and "--python" in line


def test_bf16_for_a_gpu_without_it_is_one_line(fleet_warm, tmp_path: Path) -> None:
    p = load(fleet_warm.profiles["h200"])
    p.capability, p.name = (7, 0), "Tesla V100-SXM2-16GB"  # sm_70: no bfloat16
    v100 = save(p, tmp_path / "v100.json")
    line = _refused(["--model", "phi-3-mini-4k-2l", "--dtype", "bf16", "--gpu-profile",
                     str(v100)], fleet_warm.python, tmp_path / "o")  # fmt: skip
    assert "V100" in line and "no bfloat16" in line and "--dtype fp16" in line
