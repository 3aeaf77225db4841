"""Restoring for the workload's runtime, not tcm's: --python asks another interpreter (a real
second one), --triton names a version, and an image merged from warms of two Python ABIs
restores only the entries each runtime can hit."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tcmtasks.errors import UsageError
from tcmtasks.runtime import resolve
from tests.conftest import compile_kernels, lookups, relocate_copy

OTHER_ABI = next(
    (
        p
        for v in ("3.12", "3.13", "3.10")
        for p in sorted(Path("/root/.pyenv/versions").glob(f"{v}*/bin/python{v}"))
        + [Path(w) for w in [shutil.which(f"python{v}")] if w]
        if f"{sys.version_info.major}.{sys.version_info.minor}" != v
    ),
    None,
)


@pytest.fixture
def other_python():
    if OTHER_ABI is None:
        pytest.skip("no second CPython (3.10, 3.12 or 3.13) on this machine")
    return OTHER_ABI


def tag(python: Path) -> str:
    return "cp" + python.name.removeprefix("python").replace(".", "")


def test_python_probe_asks_the_interpreter_itself(other_python):
    rt = resolve(python=other_python)
    assert (
        rt.producer.python == tag(other_python) != f"cp{sys.version_info[0]}{sys.version_info[1]}"
    )
    assert rt.source == f"--python {other_python}"
    mine = resolve(python=sys.executable).producer
    assert mine.triton_version == "3.6.0" and mine.triton_key  # this venv has Triton
    with pytest.raises(UsageError, match="no such interpreter"):
        resolve(python="/nonexistent/python9")
    with pytest.raises(UsageError, match="give one"):
        resolve(python=sys.executable, triton="3.6.0")
    with pytest.raises(UsageError, match="takes a version"):
        resolve(triton="latest")


@pytest.fixture
def two_abi_image(compiled_cache, tmp_path, tcm, other_python):
    """One image merged from two warms of the same kernels: this Python's real entries, and a
    copy whose warm record says it was made with the other interpreter (its entries' keys
    would differ in reality; here the rows carry the record, which is what selection reads)."""
    mine = relocate_copy(compiled_cache[0], tmp_path / "w-mine")
    other = relocate_copy(compiled_cache[0], tmp_path / "w-other")
    # other keys, as another ABI's Triton would have computed them
    for d in sorted(p for p in other.iterdir() if p.is_dir()):
        new = other / (("Z" if d.name[0] != "Z" else "Y") + d.name[1:])  # never its own key
        d.rename(new)
        for grp in new.glob("__grp__*.json"):
            data = json.loads(grp.read_text())
            data["child_paths"] = {c: str(new / c) for c in data["child_paths"]}
            grp.write_text(json.dumps(data))
    here = resolve(python=sys.executable).producer.to_dict()
    (mine / ".tcm-producer.json").write_text(json.dumps({**here, "backend": "triton"}))
    (other / ".tcm-producer.json").write_text(
        json.dumps({**here, "python": tag(other_python), "triton_key": "0" * 16})
    )
    image = f"oci:{tmp_path / 'img'}:v1"
    packed = json.loads(tcm("package", mine, other, image, "--json").stdout)
    assert packed["entries"] == 18
    return image, mine


def test_merged_image_restores_only_what_each_runtime_hits(two_abi_image, tcm, tmp_path,
                                                          other_python):  # fmt: skip
    image, _mine = two_abi_image
    node = tmp_path / "node"
    report = json.loads(
        tcm("extract", image, "--all", "-c", node, "--python", sys.executable, "--json").stdout
    )
    assert len(report["kept"]) == 9 and len(report["skipped"]) == 9
    assert all(f"workload runs cp3{sys.version_info[1]}" in s["reason"] for s in report["skipped"])
    assert report["runtime"]["source"] == f"--python {sys.executable}"
    events = tmp_path / "events.jsonl"
    compile_kernels(node, events=events)  # Triton itself: every kept entry hits
    assert lookups(events) == {"hit": 9, "miss": 0, "store": 0}
    other = tmp_path / "node-other"
    text = tcm("extract", image, "--all", "-c", other, "--python", other_python).stdout
    assert "9 skipped: built by Triton 3.6.0 cp3" in text  # this venv's 9, counted once
    assert "installed 9 entries" in text
    forced = tcm("extract", image, "--all", "-c", tmp_path / "f", "--python", other_python,
                 "--force").stdout  # fmt: skip
    assert "installed 18 entries" in forced


def test_inspect_judges_each_entry_for_a_runtime(two_abi_image, tcm):
    image, _ = two_abi_image
    info = json.loads(tcm("inspect", image, "--python", sys.executable, "--json").stdout)
    verdicts = [r["skip"] for r in info["entries"]]
    assert verdicts.count(None) == 9 and all("(a miss)" in v for v in verdicts if v)
    assert {r["python"] for r in info["entries"]} == {
        f"cp3{sys.version_info[1]}",
        f"cp{info['entries'][0]['python'][2:]}",
    } or len({r["python"] for r in info["entries"]}) == 2


def test_triton_version_picks_among_recorded_versions(compiled_cache, tmp_path, tcm):
    """Entries of Triton 3.2, 3.3 and 3.9 (real entries whose metadata says so), selected
    with --triton; entries without a version (3.2's metadata has none) are kept."""
    cache = relocate_copy(compiled_cache[0], tmp_path / "cache")
    versions = {}
    for i, meta in enumerate(sorted(cache.glob("*/*.json"))):
        if meta.name.startswith("__grp__"):
            continue
        data = json.loads(meta.read_text())
        v = ["3.3.1", "3.9.0", None][i % 3]
        if v is None:
            data.pop("triton_version", None)
        else:
            data["triton_version"] = v
        meta.write_text(json.dumps(data))
        versions[meta.parent.name] = v
    image = f"oci:{tmp_path / 'img'}:v1"
    tcm("package", cache, image)
    for wanted in ("3.3.1", "3.9.0"):
        report = json.loads(
            tcm("extract", image, "--all", "-c", tmp_path / wanted, "--triton", wanted,
                "--json").stdout
        )  # fmt: skip
        kept = {k["key"] for k in report["kept"]}
        assert kept == {k for k, v in versions.items() if v in (wanted, None)}
        assert all(f"the workload runs {wanted}" in s["reason"] for s in report["skipped"])
    gpu = json.loads(tcm("gpu", "--python", sys.executable, "--json").stdout)
    assert gpu["runtime"] == f"--python {sys.executable}"
    assert gpu["producer"]["triton_version"] == "3.6.0"
