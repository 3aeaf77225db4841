"""doctor --fix: the repairs, proven by Triton hitting the repaired cache."""

from __future__ import annotations

import json
import shutil

from tcmtasks import diagnose, repair, scan_root
from tcmtasks.cache.health import rescan
from tests.conftest import compile_kernels, lookups
from tests.support.variants import age, kernel_dirs, kernel_name


def fix_all(root):
    done = []
    for e in diagnose(scan_root(root)):
        done += repair(e)
    return done


def test_relocated_cache_misses_then_hits_after_fix(cache, tmp_path):
    """Move a cache (the original gone): Triton misses every kernel; after the fix, hits all."""
    moved = tmp_path / "moved"
    shutil.move(cache, moved)
    before = tmp_path / "before"
    shutil.copytree(moved, before / "cache")

    events = tmp_path / "before.log"
    compile_kernels(before / "cache", events=events)
    assert lookups(events) == {"hit": 0, "miss": 9, "store": 9}

    sick = diagnose(scan_root(moved))
    assert len(sick) == 9 and all(e.problems[0].code == "foreign-paths" for e in sick)
    done = fix_all(moved)
    assert [r.action for r in done] == ["rewrote-group"] * 9
    assert diagnose(scan_root(moved)) == []

    events = tmp_path / "after.log"
    compile_kernels(moved, events=events)
    assert lookups(events) == {"hit": 9, "miss": 0, "store": 0}


def test_corrupt_and_missing_groups_are_rebuilt_and_hit(cache, tmp_path):
    a, b = kernel_dirs(cache)[:2]
    (a / f"__grp__{kernel_name(a)}.json").write_text('{"child_paths": {"trunc')
    (b / f"__grp__{kernel_name(b)}.json").unlink()
    codes = {e.key: [p.code for p in e.problems] for e in diagnose(scan_root(cache))}
    assert codes == {a.name: ["bad-group"], b.name: ["missing-group"]}
    done = fix_all(cache)
    assert {r.action for r in done} == {"rewrote-group"}
    assert diagnose(scan_root(cache)) == []
    events = tmp_path / "events.log"
    compile_kernels(cache, events=events)
    assert lookups(events) == {"hit": 9, "miss": 0, "store": 0}


def test_fix_never_turns_a_hit_into_a_miss(cache, tmp_path):
    """An entry without its binary, or with corrupt metadata, is left for the user."""
    a, b = kernel_dirs(cache)[:2]
    binary = next(p for p in a.iterdir() if p.suffix in (".cubin", ".hsaco"))
    binary.unlink()
    meta = b / f"{kernel_name(b)}.json"
    meta.write_text(meta.read_text()[:50])
    grp_a = (a / f"__grp__{kernel_name(a)}.json").read_text()
    grp_b = (b / f"__grp__{kernel_name(b)}.json").read_text()
    done = fix_all(cache)
    # a's group lists a missing binary: a rewrite would not hit, so it is skipped with a reason;
    # b's corrupt metadata is not something a repair may touch at all
    assert [(r.key, r.action) for r in done] == [(a.name, "skipped")]
    assert "remove the entry" in done[0].detail
    assert (a / f"__grp__{kernel_name(a)}.json").read_text() == grp_a
    assert (b / f"__grp__{kernel_name(b)}.json").read_text() == grp_b


def test_foreign_hit_is_kept_when_the_copy_lacks_files(cache, tmp_path):
    """A copy reading the original's metadata must not be 'fixed' into a miss."""
    entry = kernel_dirs(cache)[0]
    copy_root = tmp_path / "copy"
    copy_root.mkdir()
    copy = copy_root / entry.name
    shutil.copytree(entry, copy)
    (copy / f"{kernel_name(entry)}.json").unlink()
    (e,) = scan_root(copy_root)
    assert e.lookup == "foreign-hit"
    (r,) = repair(e)
    assert r.action == "skipped"
    assert rescan(e).lookup == "foreign-hit"


def test_stale_tmp_dirs_removed_fresh_ones_kept(cache):
    entry = kernel_dirs(cache)[0]
    stale, fresh = entry / "tmp.pid_1_old", entry / "tmp.pid_2_new"
    stale.mkdir()
    (stale / "x.cubin").write_bytes(b"partial")
    fresh.mkdir()
    age(stale, 7200)
    done = fix_all(cache)
    assert [r.action for r in done] == ["removed-tmp"]
    assert not stale.exists() and fresh.exists()
    assert (entry / f"{kernel_name(entry)}.json").exists()


def test_groups_written_by_fix_are_triton_shaped(cache, tmp_path):
    moved = tmp_path / "moved"
    shutil.move(cache, moved)
    fix_all(moved)
    for grp in moved.glob("*/__grp__*.json"):
        data = json.loads(grp.read_text())
        assert list(data) == ["child_paths"]
        assert all(p.startswith(str(moved)) for p in data["child_paths"].values())
