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
    return json.loads(stdout.strip().splitlines()[-1])  # the workload prints first


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
    assert "the run compiled 3 kernels" in proc.stderr and "did not cover" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: --require-hits")


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


def test_every_event_is_on_disk_when_record_returns(tmp_path, monkeypatch):
    monkeypatch.setenv("TCM_TRACK_DIR", str(tmp_path))
    for i in range(10):
        track_mod.record("hit" if i % 2 else "miss", f"K{i}", "k", "/r")
        (path,) = tmp_path.glob("events-*.jsonl")
        assert len(path.read_text().splitlines()) == i + 1  # no buffer to lose
    other = tmp_path / "other"
    monkeypatch.setenv("TCM_TRACK_DIR", str(other))  # a tracker installed later in the process
    track_mod.record("hit", "K10", "k", "/r")
    assert len(list(other.glob("events-*.jsonl"))) == 1
    with open(path, "a") as f:
        f.write('{"e": "hit", "key": "torn')  # a process killed mid-write
    assert track_mod.summarize(track_mod.read_events(tmp_path)).hits == 5


def test_the_manager_module_needs_only_the_standard_library():
    code = (
        "import sys, tcmtasks.track; "
        "bad = [m for m in ('sqlite_utils', 'rich', 'typer', 'triton') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("start", ["spawn", "fork"])
def test_compiles_in_workers_that_exit_hard_are_all_counted(tcm, tmp_path, start):
    cache = tmp_path / "cache"
    proc = tcm(
        "track", "-c", cache, "--json", "--", sys.executable, "-m",
        "tests.support.worker_compiles", start,
        ok=0, extra_env={"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    # three processes compiled one kernel each; none of them exited cleanly
    assert (report["misses"], report["stores"], report["hits"]) == (3, 3, 0)
    assert len(report["new_kernels"]) == 3 and report["compiled_nothing"] is False
    assert report["verdict"] == "compiled 3 kernels"
    assert report["inductor"] is None  # no torch.compile in this run: nothing to say


def test_torch_compile_is_tracked_at_inductor_level(tracked_cold_warm, tcm, tmp_path):
    """Cold: an FX-graph and AOTAutograd miss, refused by --require-hits (the fixture ran it);
    warm, in a new process: both caches hit, and --require-hits passes."""
    warmed, cold = tracked_cold_warm
    assert cold["verdict"] == "compiled 1 graph" and cold["compiled_nothing"] is False
    assert cold["inductor"]["fx_misses"] == 1 and cold["inductor"]["aot_misses"] == 1
    assert cold["inductor"]["fx_hits"] == 0 and cold["inductor"]["processes"] >= 1
    copy = shutil.copytree(warmed, tmp_path / "elsewhere")
    proc = tcm(
        "track", "--require-hits", "--json", "--", sys.executable, "-m",
        "tests.support.tiny_model",
        extra_env={"PYTHONPATH": str(REPO), "TORCHINDUCTOR_CACHE_DIR": str(copy)},
    )  # fmt: skip
    warm = json.loads(proc.stdout.strip().splitlines()[-1])
    assert warm["verdict"] == "compiled nothing: every lookup hit"
    assert (warm["inductor"]["fx_hits"], warm["inductor"]["aot_hits"]) == (1, 1)
    assert (warm["inductor"]["fx_misses"], warm["inductor"]["aot_misses"]) == (0, 0)
    text = tcm(
        "track", "--", sys.executable, "-m", "tests.support.tiny_model",
        extra_env={"PYTHONPATH": str(REPO), "TORCHINDUCTOR_CACHE_DIR": str(copy)},
    ).stderr  # fmt: skip
    assert "compiled nothing" in text and "FX graphs: 1 hits, 0 misses" in text


def test_inductor_trace_reading(tmp_path):
    (tmp_path / "a.log").write_text(
        'V1129 x.py:1] {"artifact": {"name": "fx_graph_cache_hit", "encoding": "json"}}\n'
        "\t{\"triton_bundler_meta\": \"TritonBundlerMetadata(cached_kernel_names=['k1', 'k2'], "
        'statically_launched_kernel_names=[])", "key": "f1"}\n'
        'V1129 x.py:1] {"artifact": {"name": "aotautograd_cache_miss", "encoding": "json"}}\n'
        'V1129 x.py:1] {"artifact": {"name": "fx_graph_cache_bypass", "encoding": "json"}}\n'
        "\tnot a payload of a hit: cached_kernel_names=['zzz']\n"
    )
    stats = track_mod.read_inductor(tmp_path)
    assert stats is not None
    assert (stats.fx_hits, stats.fx_bypasses, stats.aot_misses) == (1, 1, 1)
    assert stats.bundled_kernels == 2 and stats.graphs_compiled == 1 and stats.compiled
    assert track_mod.read_inductor(tmp_path / "none") is None
    assert track_mod.read_inductor(tmp_path, since=time.time() + 60) is None


DYNAMIC_OPT = (
    "import torch, transformers, sys\n"
    "cfg = transformers.AutoConfig.from_pretrained(sys.argv[1])\n"
    "model = transformers.AutoModelForCausalLM.from_config(cfg).eval()\n"
    "with torch.no_grad():\n"
    "    torch.compile(model, dynamic=True)(input_ids=torch.randint(0, 100, (2, 64)))\n"
)


def test_an_attempt_torch_restarted_is_not_a_compile(tcm, tmp_path):
    """tiny-opt under torch.compile(dynamic=True) (for the CPU, by the CUDA build of torch,
    which has transformers): Dynamo's first attempt misses AOTAutograd and restarts
    (TensorifyScalarRestartAnalysis); the second finishes and is cached. On the warm cache the
    first attempt misses again, as it would on any machine: --require-hits passes, and the
    report says what the restarted attempt did."""
    from tests.support.tools import require_cuda_python

    python = require_cuda_python()
    config = str(REPO / "tcmtasks" / "data" / "models" / "tiny-opt")
    env = {"PYTHONPATH": str(REPO), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "ind"),
           "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    run = ["track", "--json", "--", python, "-c", DYNAMIC_OPT, config]
    cold = report(tcm(*run, extra_env=env).stdout)
    assert cold["inductor"]["fx_misses"] == 1 and cold["compiled_nothing"] is False
    assert cold["inductor"]["aot_misses"] == 1 and cold["inductor"]["aot_restarted"] == 1
    warm = report(tcm(run[0], "--require-hits", *run[1:], extra_env=env).stdout)
    assert warm["verdict"] == "compiled nothing: every lookup hit"
    ind = warm["inductor"]
    assert (ind["fx_hits"], ind["aot_hits"], ind["aot_misses"], ind["aot_restarted"]) == (
        1,
        1,
        0,
        1,
    )
