"""The host's Triton build: detected once per install, and again when anything changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tcmtasks import producer
from tests.conftest import REPO


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "tcm" / "triton-build.json"


def test_the_build_is_cached_per_install_and_follows_changes(cache_home, monkeypatch):
    pytest.importorskip("triton")
    first = producer.detect()
    assert first.triton_key and first.triton_version
    entries = json.loads(cache_home.read_text())
    (stamp,) = entries
    assert entries[stamp]["triton_key"] == first.triton_key
    # the cache is what a second run reads: plant a value and see it come back
    entries[stamp]["triton_key"] = "planted"
    cache_home.write_text(json.dumps(entries))
    assert producer.detect().triton_key == "planted"
    # another ptxas setting is another build: detected again, not read from the cache
    monkeypatch.setenv("TRITON_PTXAS_PATH", "/nonexistent/ptxas")
    again = producer.detect()
    assert again.triton_key == first.triton_key
    assert len(json.loads(cache_home.read_text())) == 2


def test_an_unreadable_cache_is_ignored(cache_home):
    pytest.importorskip("triton")
    cache_home.parent.mkdir(parents=True)
    cache_home.write_text("{not json")
    assert producer.detect().triton_key


def _torch_with_ptxas(tmp_path: Path, ships: bool = True) -> tuple[Path, Path]:
    """A stand-in torch package whose build ships a ptxas (as torch 2.11.0+cu130 does), first
    on the path of a child interpreter; detect() finds it without importing torch."""
    pkg = tmp_path / "site" / "torch"
    (pkg / "bin").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    ptxas = pkg / "bin" / "ptxas"
    if ships:
        ptxas.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n")
        ptxas.chmod(0o755)
    return tmp_path / "site", ptxas


def _child(code: str, site: Path, tmp_path: Path, **env: str) -> list[str]:
    full = {k: v for k, v in os.environ.items() if k != "TRITON_PTXAS_PATH"}
    full.update(PYTHONPATH=os.pathsep.join([str(site), str(REPO)]),
                XDG_CACHE_HOME=str(tmp_path / "cache"), **env)  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return out.stdout.split()


DETECT = "from tcmtasks.producer import detect; d = detect(); print(d.ptxas, d.torch_ptxas)"


def test_torchs_ptxas_is_reported_beside_tritons(tmp_path: Path) -> None:
    pytest.importorskip("triton")
    site, _ = _torch_with_ptxas(tmp_path)
    tritons, torchs = _child(DETECT, site, tmp_path)
    assert torchs == "13.0.88" and tritons not in ("13.0.88", "None")
    site, _ = _torch_with_ptxas(tmp_path / "none", ships=False)
    assert _child(DETECT, site, tmp_path / "none")[1] == "None"


def test_an_explicit_ptxas_setting_is_what_both_use(tmp_path: Path) -> None:
    pytest.importorskip("triton")
    site, ptxas = _torch_with_ptxas(tmp_path)
    assert _child(DETECT, site, tmp_path, TRITON_PTXAS_PATH=str(ptxas)) == ["13.0.88", "None"]


def test_the_workload_ptxas_is_what_triton_then_keys_with(tmp_path: Path) -> None:
    """What a torch warm's child does first: Triton's key part (backend.hash() reads
    get_ptxas_version) then names torch's ptxas, as the workload's FX-graph hit does."""
    pytest.importorskip("triton")
    site, ptxas = _torch_with_ptxas(tmp_path)
    code = (
        "import os; from tcmtasks.producer import use_workload_ptxas; p = use_workload_ptxas(); "
        "from triton.backends.nvidia.compiler import get_ptxas_version; "
        "print(p, os.environ['TRITON_PTXAS_PATH'], get_ptxas_version(90).split()[-1])"
    )
    assert _child(code, site, tmp_path) == [str(ptxas), str(ptxas), "V13.0.88"]
    site, _ = _torch_with_ptxas(tmp_path / "none", ships=False)
    code = "import os; from tcmtasks.producer import use_workload_ptxas; " \
           "print(use_workload_ptxas(), 'TRITON_PTXAS_PATH' in os.environ)"  # fmt: skip
    assert _child(code, site, tmp_path / "none") == ["None", "False"]
