"""Tracking: exact hit/miss counts from Triton's own lookups, in every situation that
docs/cache-formats.md ("Groups and the hit rule") describes, and the stats reaching the index."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tcmtasks import TritonCacheTracker, scan_root
from tcmtasks import track as track_mod
from tcmtasks.prune import apply, plan_full, plan_ir
from tests.conftest import REPO
from tests.support.variants import age

COMPILE = [sys.executable, "-m", "tests.support.compile_kernels"]
ALL = ["cuda:80", "cuda:90", "hip:gfx942"]


def report(stdout: str) -> dict:
    """tcm track's JSON, printed after the command's own output (JSON lines here)."""
    return json.loads(stdout[stdout.index("{\n") :])


def tracked(tcm, cache, *targets, ok=True, flags=()):
    proc = tcm(
        "track", "--json", "-c", cache, *flags, "--", *COMPILE, *targets,
        ok=ok, extra_env={"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    return report(proc.stdout), proc


def test_cold_then_warm(tcm, tmp_path):
    cache = tmp_path / "c"
    cold, _ = tracked(tcm, cache, *ALL)
    assert (cold["lookups"], cold["hits"], cold["misses"], cold["stores"]) == (9, 0, 9, 9)
    assert len(cold["new_kernels"]) == 9 and cold["cache_dirs"] == [str(cache)]
    assert all(k["compile_seconds"] > 0 for k in cold["kernels"])
    assert cold["compile_seconds"] == pytest.approx(
        sum(k["compile_seconds"] for k in cold["kernels"]), rel=1e-6
    )
    warm, _ = tracked(tcm, cache, *ALL, flags=("--require-hits",))
    assert (warm["lookups"], warm["hits"], warm["misses"], warm["stores"]) == (9, 9, 0, 0)
    assert warm["compile_seconds"] == 0 and warm["new_kernels"] == []
    assert warm["returncode"] == 0


def test_relocated_cache_without_group_rewrite_misses_everything(tcm, cache, tmp_path):
    moved = tmp_path / "moved"
    shutil.move(cache, moved)  # the groups still name the old location, now gone
    stats, _ = tracked(tcm, moved, *ALL, ok=1, flags=("--require-hits",))
    assert (stats["hits"], stats["misses"], stats["stores"]) == (0, 9, 9)
    table = tcm(
        "track",
        "--require-hits",
        "-c",
        moved,
        "--",
        *COMPILE,
        "cuda:90",
        ok=0,
        extra_env={"PYTHONPATH": str(REPO)},
    )
    assert "3 hits, 0 misses" in table.stderr  # the first run re-stored them in place


def test_require_hits_message(tcm, cache, tmp_path):
    shutil.move(cache, tmp_path / "moved")
    proc = tcm(
        "track",
        "--require-hits",
        "-c",
        tmp_path / "moved",
        "--",
        *COMPILE,
        "cuda:90",
        ok=1,
        extra_env={"PYTHONPATH": str(REPO)},
    )
    assert "3 kernel(s) were compiled" in proc.stderr and "did not cover" in proc.stderr


def test_partly_pruned_cache(tcm, cache):
    for d in cache.iterdir():
        age(d, 7200)
    entries = [e for e in scan_root(cache)]
    assert not apply(plan_ir(entries, asm=True, source=True)).failed
    softmax = [e for e in scan_root(cache) if e.name == "softmax_kernel"]
    assert len(apply(plan_full(softmax)).done) == 3
    stats, _ = tracked(tcm, cache, *ALL)
    assert (stats["hits"], stats["misses"], stats["stores"]) == (6, 3, 3)
    assert {k["name"] for k in stats["kernels"] if k["misses"]} == {"softmax_kernel"}


def test_many_processes_add_up(tcm, cache):
    script = " & ".join(f"{sys.executable} -m tests.support.compile_kernels {t}" for t in ALL)
    proc = tcm(
        "track",
        "--json",
        "-c",
        cache,
        "--",
        "sh",
        "-c",
        f"{script} & wait",
        extra_env={"PYTHONPATH": str(REPO)},
    )
    stats = report(proc.stdout)
    assert (stats["hits"], stats["misses"]) == (9, 0)


def test_stats_reach_the_index(tcm, cache):
    tracked(tcm, cache, "cuda:90")
    tracked(tcm, cache, "cuda:90")
    rows = json.loads(tcm("list", "-c", cache, "--min-hits", "1", "--json").stdout)
    assert len(rows) == 3 and {r["hits"] for r in rows} == {2}
    assert all(r["last_used"] > time.time() - 300 for r in rows)
    never = json.loads(tcm("list", "-c", cache, "--max-hits", "0", "--json").stdout)
    assert len(never) == 6 and all(r["target"] != "cuda:90" for r in never)
    assert [
        r["hits"] for r in json.loads(tcm("list", "-c", cache, "--sort", "-hits", "--json").stdout)
    ][:3] == [2, 2, 2]


def test_gc_evicts_the_entries_no_tracked_run_used(tcm, cache):
    for d in cache.iterdir():
        age(d, 7200)
    tracked(tcm, cache, "cuda:90")  # the cuda:90 kernels are in use
    total = sum(e.size for e in scan_root(cache))
    used = sum(e.size for e in scan_root(cache) if str(e.target) == "cuda:90")
    report = json.loads(tcm("gc", "-c", cache, "--max-size", str(used), "-y", "--json").stdout)
    gone = {a["target"] for a in report["actions"]}
    assert "cuda:90" not in gone and report["result"]["freed"] == total - used


def test_spooled_events_are_ingested_by_index(tcm, cache, tmp_path):
    spool = tmp_path / "spool"
    env = {k: v for k, v in tcm.env.items()}
    env.update(
        TRITON_CACHE_DIR=str(cache),
        TRITON_CACHE_MANAGER=track_mod.MANAGER,
        TCM_TRACK_DIR=str(spool),
        PYTHONPATH=str(REPO),
    )
    subprocess.run([*COMPILE, "cuda:90"], env=env, cwd=REPO, check=True, capture_output=True)
    assert list(spool.glob("events-*.jsonl"))
    tcm("index", "-c", cache, extra_env={"TCM_TRACK_DIR": str(spool)})
    assert not list(spool.glob("*.jsonl"))  # taken
    rows = json.loads(tcm("list", "-c", cache, "--min-hits", "1", "--json").stdout)
    assert len(rows) == 3


def test_bad_invocations(tcm, cache):
    assert "command not found" in tcm("track", "--", "no-such-command-xyz", ok=2).stderr
    proc = tcm("track", "--", "true", ok=2, extra_env={"TRITON_CACHE_MANAGER": "some.module:Other"})
    assert "some.module:Other" in proc.stderr
    assert tcm("track", "--", "sh", "-c", "exit 7", ok=7).returncode == 7


def test_tracker_api_in_process(compiled_cache, tmp_path, monkeypatch):
    """The Python API, compiling in this very process through the stand-in driver."""
    from tcmtasks.targets import Target
    from tcmtasks.warm.standin import TensorStandIn, target_active, warmup
    from tests.support.kernels import launches

    monkeypatch.delenv("TRITON_CACHE_MANAGER", raising=False)
    cache = tmp_path / "cache"
    shutil.copytree(compiled_cache[0], cache)  # foreign groups, original present: hits
    tracker = TritonCacheTracker(cache_dir=cache).install()
    assert os.environ["TRITON_CACHE_MANAGER"] == track_mod.MANAGER
    with target_active(Target.parse("cuda:90")):
        for kernel, args, meta in launches(TensorStandIn):
            warmup(kernel, *args, **meta)
    summary = tracker.summary()
    assert summary["hits"] == 3 and summary["misses"] == 0
    assert summary["per_kernel"] == {
        "add_kernel": {"hits": 2, "misses": 0},
        "softmax_kernel": {"hits": 1, "misses": 0},
    }
    assert tracker.stats().lookups == 3
    tracker.reset()
    assert tracker.stats().lookups == 0
    tracker.uninstall()
    assert "TRITON_CACHE_MANAGER" not in os.environ
    assert os.environ.get("TRITON_CACHE_DIR") != str(cache)


def test_events_are_buffered_not_written_one_by_one(tmp_path, monkeypatch):
    monkeypatch.setenv("TCM_TRACK_DIR", str(tmp_path))
    track_mod.flush()
    monkeypatch.setattr(track_mod, "_last_flush", time.monotonic())
    for i in range(10):
        track_mod.record("hit", f"K{i}", "k", "/r")
    assert not list(tmp_path.glob("*.jsonl"))
    track_mod.flush()
    (path,) = tmp_path.glob("events-*.jsonl")
    assert len(path.read_text().splitlines()) == 10
    with open(path, "a") as f:
        f.write('{"e": "hit", "key": "torn')  # a process killed mid-write
    assert track_mod.summarize(track_mod.read_events(tmp_path)).hits == 10


def test_the_manager_module_needs_only_the_standard_library():
    code = (
        "import sys, tcmtasks.track; "
        "bad = [m for m in ('sqlite_utils', 'rich', 'typer', 'triton') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
