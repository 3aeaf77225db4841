"""The workload's own warm-up script, run GPU-less under the replay
(``tcm warm --backend command --gpu-profile P -- python warmup.py``; warm/script_gpuless.py).

The scripts here do what a serving script does: ``from_pretrained`` of a model saved locally
(by the fixture: tiny-opt with small random weights), ``.to("cuda")``, ``torch.compile``,
calls under ``no_grad``, ``mark_dynamic``. What they write is compared with the torch
backend's GPU-less warm of the same model, whose keys the GPU machine showed equal to its own
(bench/RESULTS.md); that a script's cache serves the node's own run of it is the GPU proof's
(bench/gpu_proof_gpuless.py --script).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.profiles import REPO
from tests.support.tools import require_cuda_python

#: the fleet warm's program (tiny-opt, fp16, one call of 1x128), as a script would write it
WARMUP = """
import sys, torch, transformers

model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float16)
model = model.to("cuda")
compiled = torch.compile(model)
print("{this line is the script's, not a result}")
for b, s in SHAPES:
    ids = torch.randint(0, 100, (b, s), device="cuda")
    MARK
    with torch.no_grad():
        out = compiled(input_ids=ids)
    torch.cuda.synchronize()
"""


def _script(where: Path, shapes: str = "[(1, 128)]", mark: str = "", tail: str = "") -> Path:
    body = WARMUP.replace("SHAPES", shapes).replace("MARK", mark or "pass") + tail
    where.write_text(textwrap.dedent(body))
    return where


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """tiny-opt saved with small random weights, as ``save_pretrained`` writes a model."""
    python = require_cuda_python()
    dest = tmp_path_factory.mktemp("model") / "tiny-opt"
    code = (
        "import sys, transformers\n"
        "cfg = transformers.AutoConfig.from_pretrained(sys.argv[1])\n"
        "transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(sys.argv[2])\n"
    )
    subprocess.run(
        [python, "-c", code, str(REPO / "tcmtasks" / "data" / "models" / "tiny-opt"), str(dest)],
        check=True, capture_output=True,
    )  # fmt: skip
    assert (dest / "model.safetensors").stat().st_size > 100_000
    return dest


def _tcm(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcmtasks.cli", *args],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def _warm(script: Path, model: Path, profile: Path, out: Path) -> subprocess.CompletedProcess[str]:
    python = require_cuda_python()
    return _tcm(["warm", "--backend", "command", "--gpu-profile", str(profile), "-o", str(out),
                 "--json", "--", python, str(script), str(model)])  # fmt: skip


def _runs(r: subprocess.CompletedProcess[str]) -> list[dict]:
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads([x for x in r.stdout.splitlines() if x.startswith("{")][-1])["runs"]


def _graphs(cache: Path) -> tuple[set[str], set[str]]:
    fx = {p.name for p in cache.glob("fxgraph/*/*") if p.is_dir()}
    aot = {p.name for p in cache.glob("aotautograd/*") if p.is_dir()}
    return fx, aot


def test_a_warmup_script_writes_what_the_torch_warm_writes_and_hits_it_again(
    fleet_warm, saved_model: Path, tmp_path: Path
) -> None:
    """from_pretrained + .to("cuda") in the script: built from config.json on meta, as the
    torch backend builds tiny-opt, so the FX-graph and AOTAutograd keys are the fleet warm's.
    A second run of the script on that cache is served by it (Inductor's own counters)."""
    profile = fleet_warm.profiles["h200"]
    out = tmp_path / "o"
    script = _script(tmp_path / "warmup.py")
    (run,) = _runs(_warm(script, saved_model, profile, out))
    assert run["how"] == "gpu-less" and (run["fx_graphs"], run["aot_graphs"]) == (1, 1)
    assert run["helpers"]["built"] == ["cuda_utils"]
    cache = out / "nvidia-h200"
    assert _graphs(cache) == _graphs(fleet_warm.out / "nvidia-h200")
    record = json.loads((cache / ".tcm-producer.json").read_text())
    assert record["how"] == "gpu-less" and record["gpus"] == ["NVIDIA H200"]
    (again,) = _runs(_warm(script, saved_model, profile, out))
    assert (again["fx_graphs"], again["fx_hits"], again["aot_graphs"]) == (0, 1, 0)


def test_mark_dynamic_in_a_script_is_the_torch_warms_mark_dynamic(
    fleet_warm, saved_model: Path, tmp_path: Path
) -> None:
    """A script marking the sequence dim dynamic, calling 2x32 then 2x64: one graph with a
    symbolic length, the same one ``tcm warm --backend torch --mark-dynamic seq`` writes."""
    profile = fleet_warm.profiles["h200"]
    script = _script(
        tmp_path / "warmup.py", "[(2, 32), (2, 64)]", "torch._dynamo.mark_dynamic(ids, 1)"
    )
    (run,) = _runs(_warm(script, saved_model, profile, tmp_path / "script"))
    assert (run["fx_graphs"], run["aot_graphs"]) == (1, 1)
    torch_runs = _runs(
        _tcm(["warm", "--backend", "torch", "--model", "tiny-opt", "--batch", "2", "--seq",
              "32,64", "--mark-dynamic", "seq", "--gpu-profile", str(profile), "--python",
              fleet_warm.python, "-o", str(tmp_path / "torch"), "--json"])
    )  # fmt: skip
    assert [(x["seq"], x["fx_graphs"]) for x in torch_runs] == [(32, 1), (64, 0)]
    script_graphs = _graphs(tmp_path / "script" / "nvidia-h200")
    assert script_graphs == _graphs(tmp_path / "torch" / "nvidia-h200")
    assert len(script_graphs[0]) == 1


def test_from_pretrained_traces_as_the_model_built_from_its_config(
    saved_model: Path, tmp_path: Path
) -> None:
    """Why the replay may build a from_pretrained model from its config alone: with the real
    weights loaded, torch.compile (here for the CPU, by the same CUDA build of torch) writes
    the same FX graph key as for the model made by from_config: values are not in the key."""
    python = require_cuda_python()
    code = textwrap.dedent("""
        import sys, torch, transformers
        path, how = sys.argv[1], sys.argv[2]
        if how == "weights":
            m = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        else:
            cfg = transformers.AutoConfig.from_pretrained(path)
            m = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
        with torch.no_grad():
            torch.compile(m)(input_ids=torch.randint(0, 100, (1, 16)))
    """)
    keys = {}
    for how in ("weights", "config"):
        cache = tmp_path / how
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "CUDA_VISIBLE_DEVICES": ""}
        r = subprocess.run([python, "-c", code, str(saved_model), how], env=env,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        keys[how] = _graphs(cache)[0]
    assert keys["weights"] == keys["config"] and len(keys["weights"]) == 1


REFUSED = {
    "value": (
        "",
        "\nprint(out.logits[0, -1].argmax().item())\n",
        "warmup.py:15 (print(out.logits[0, -1].argmax().item())) reads a tensor's value back",
    ),
    "cudagraphs": ("reduce-overhead", "", "CUDA graphs (mode='reduce-overhead'"),
    "training": ("train", "", "a training graph"),
    "cpu": ("cpu", "", "OPTForCausalLM.to('cpu'): a GPU-less warm compiles for the profile's GPU"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_needs_the_gpu_is_one_line_naming_it(
    case: str, fleet_warm, saved_model: Path, tmp_path: Path
) -> None:
    """Reading a value back is refused at the script's line; CUDA graphs and training before
    Inductor compiles the graph; a model moved to the CPU at the move."""
    how, tail, said = REFUSED[case]
    script = _script(tmp_path / "warmup.py", tail=tail)
    text = script.read_text()
    if how == "reduce-overhead":
        text = text.replace("torch.compile(model)", "torch.compile(model, mode='reduce-overhead')")
    elif how == "train":
        text = text.replace("with torch.no_grad():", "if True:")
    elif how == "cpu":
        text = text.replace('"cuda"', '"cpu"')
    script.write_text(text)
    r = _warm(script, saved_model, fleet_warm.profiles["h200"], tmp_path / "o")
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and said in lines[0], r.stderr[-3000:]


def test_a_command_that_is_not_a_python_script_is_refused_before_it_runs(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    r = _tcm(["warm", "--backend", "command", "--gpu-profile", "nvidia-h200", "-o",
              str(tmp_path / "o"), "--", "sh", "-c", f"touch {marker}"])  # fmt: skip
    assert r.returncode == 2 and "python warmup.py ARGS, or python -m MODULE" in r.stderr
    assert not marker.exists()


def test_mark_dynamic_takes_batch_and_seq(tmp_path: Path) -> None:
    r = _tcm(["warm", "--backend", "torch", "--model", "tiny-opt", "--mark-dynamic", "heads",
              "--gpu-profile", "nvidia-h200", "-o", str(tmp_path / "o")])  # fmt: skip
    assert r.returncode == 2 and "--mark-dynamic takes batch and/or seq, not heads" in r.stderr


def test_an_unmarked_dim_that_varies_is_still_refused_without_a_gpu(tmp_path: Path) -> None:
    r = _tcm(["warm", "--backend", "torch", "--model", "tiny-opt", "--mark-dynamic", "seq",
              "--batch", "1,2", "--gpu-profile", "nvidia-h200", "-o",
              str(tmp_path / "o")])  # fmt: skip
    assert r.returncode == 2 and "--mark-dynamic of the dims that vary" in r.stderr
