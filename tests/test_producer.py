"""The host's Triton build: detected once per install, and again when anything changes."""

from __future__ import annotations

import json

import pytest

from tcmtasks import producer


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
