"""Root discovery: Triton's own locations, Inductor's triton/<device>, vLLM's rank dirs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tcmtasks.cache.roots import discover, expand


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in (
        "TRITON_CACHE_DIR",
        "TRITON_HOME",
        "TORCHINDUCTOR_CACHE_DIR",
        "VLLM_CACHE_ROOT",
        "XDG_CACHE_HOME",
    ):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "no-inductor"))
    return home


def put_cache(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst)
    return dst


def test_defaults_in_triton_order(clean_env, compiled_cache, tmp_path, monkeypatch):
    src = compiled_cache[0]
    home_cache = put_cache(src, clean_env / ".triton" / "cache")
    assert [(r.path, r.origin) for r in discover()] == [(home_cache, "default")]

    th = tmp_path / "th"
    put_cache(src, th / ".triton" / "cache")
    monkeypatch.setenv("TRITON_HOME", str(th))
    env_dir = put_cache(src, tmp_path / "env-cache")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(env_dir))
    assert [r.origin for r in discover()] == ["TRITON_CACHE_DIR", "TRITON_HOME", "default"]


def test_inductor_and_vllm_layouts(clean_env, compiled_cache, tmp_path, monkeypatch):
    src = compiled_cache[0]
    inductor = tmp_path / "inductor"
    (inductor / "fxgraph").mkdir(parents=True)
    put_cache(src, inductor / "triton" / "0")
    put_cache(src, inductor / "triton" / "1")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(inductor))

    vllm = tmp_path / "vllm"
    base = vllm / "torch_compile_cache" / "abc123"
    put_cache(src, base / "rank_0_0" / "triton_cache")
    put_cache(src, base / "rank_1_0" / "triton_cache")
    put_cache(src, base / "rank_0_0" / "inductor_cache" / "triton" / "0")
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(vllm))

    found = {(r.origin, r.group) for r in discover() if r.kind == "triton"}
    assert found == {
        ("inductor", "0"), ("inductor", "1"),
        ("vllm", "abc123/rank_0_0"), ("vllm", "abc123/rank_1_0"),
        ("vllm", "abc123/rank_0_0/inductor/0"),
    }  # fmt: skip
    # and the two caches' own artifacts, as roots of their kind
    assert {(r.kind, r.path) for r in discover() if r.kind != "triton"} == {
        ("inductor", inductor),
        ("vllm", vllm),
    }
    # pointing at the parent dirs expands them the same way
    assert {r.group for r in expand(inductor)} == {"0", "1"}
    assert len(expand(vllm)) == 3
    assert len(expand(vllm / "torch_compile_cache")) == 3


def test_explicit_root_and_duplicates(clean_env, compiled_cache, tmp_path):
    root = put_cache(compiled_cache[0], tmp_path / "c")
    roots = discover([root, tmp_path / "c" / ".." / "c"])
    assert [(r.path, r.origin) for r in roots] == [(root, "explicit")]


def test_empty_and_missing_dirs_are_roots_as_given(clean_env, tmp_path):
    (tmp_path / "empty").mkdir()
    assert [r.path for r in expand(tmp_path / "empty")] == [tmp_path / "empty"]
    assert [r.path for r in expand(tmp_path / "missing")] == [tmp_path / "missing"]
    assert discover() == []  # nothing at any default location
