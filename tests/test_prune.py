"""Prune, dedup and gc: what goes, what stays, and Triton still hitting what stays."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tcmtasks import Index, scan_root
from tcmtasks.cache.lock import LOCK_NAME, locked
from tcmtasks.cache.remove import TRASH, purge_trash
from tcmtasks.cache.roots import Root
from tcmtasks.prune import apply, plan_dedup, plan_full, plan_gc, plan_ir
from tests.conftest import REPO, compile_kernels, honouring_file_modes, lookups
from tests.support.variants import age, edit_metadata, kernel_dirs, kernel_name, rekey


@pytest.fixture
def settled(cache):
    """The session cache, written a while ago (nothing looks in progress)."""
    for d in cache.iterdir():
        age(d, 3 * 3600)
    return cache


def kernels(root):
    return [e for e in scan_root(root) if e.kind == "kernel"]


def triton_lookups(root, tmp_path, name="events.log"):
    events = tmp_path / name
    compile_kernels(root, events=events)
    return lookups(events)


def test_ir_prune_keeps_every_hit(settled, tmp_path):
    before = {e.key: e.size for e in kernels(settled)}
    plan = plan_ir(kernels(settled), asm=True, source=True)
    assert len(plan.actions) == 9 and plan.bytes > 0
    result = apply(plan)
    assert not result.failed and result.freed == plan.bytes
    for e in kernels(settled):
        kinds = {f.kind for f in e.files}
        assert kinds == {"metadata", "group", "binary"}, kinds
        assert e.lookup == "hit" and not e.problems
        assert e.size < before[e.key]
        grp = json.loads((e.path / f"__grp__{e.name}.json").read_text())["child_paths"]
        assert sorted(grp) == sorted(f.name for f in e.files if f.kind != "group")
        assert e.mtime < time.time() - 2 * 3600  # pruning did not make it look fresh
    assert triton_lookups(settled, tmp_path) == {"hit": 9, "miss": 0, "store": 0}


def test_ir_prune_leaves_entries_that_would_not_hit(settled):
    a, b = kernel_dirs(settled)[:2]
    (a / f"__grp__{kernel_name(a)}.json").write_text("{broken")
    next(p for p in b.iterdir() if p.suffix in (".cubin", ".hsaco")).unlink()
    plan = plan_ir(kernels(settled))
    assert {e.key for e, _ in plan.skipped} == {a.name, b.name}
    assert len(plan.actions) == 7
    assert all("run tcm doctor" in why for _, why in plan.skipped)


def test_full_prune_of_a_selection(settled, tmp_path):
    chosen = [e for e in kernels(settled) if e.name == "softmax_kernel"]
    result = apply(plan_full(chosen))
    assert len(result.done) == 3 and result.freed == sum(e.size for e in chosen)
    assert not any(e.name == "softmax_kernel" for e in kernels(settled))
    assert not (settled / TRASH).exists() or not any((settled / TRASH).iterdir())
    assert triton_lookups(settled, tmp_path) == {"hit": 6, "miss": 3, "store": 3}


def clone_under_new_key(entry, root, seconds_old):
    """What an older Triton build leaves: the same kernel and binary under another key."""
    key = base64.b32encode(secrets.token_bytes(32)).decode().rstrip("=")
    copy = root / key
    shutil.copytree(entry, copy)
    rekey_tmp = rekey(copy, key)  # points the group at the copy
    edit_metadata(rekey_tmp, lambda m: m.update(triton_version="3.5.1"))
    age(rekey_tmp, seconds_old)
    return rekey_tmp


def test_dedup_keeps_the_newest_and_triton_still_hits(settled, tmp_path):
    originals = kernel_dirs(settled)
    for d in originals:
        age(d, 3600)
    clones = [clone_under_new_key(d, settled, 7200) for d in originals[:4]]
    plan = plan_dedup(kernels(settled))
    assert sorted(a.entry.key for a in plan.actions) == sorted(c.name for c in clones)
    for a in plan.actions:
        assert "duplicate of" in a.reason and "binary sha256" in a.reason
        assert "3.5.1 vs 3.6.0" in a.reason
    apply(plan)
    assert sorted(e.key for e in kernels(settled)) == sorted(d.name for d in originals)
    assert triton_lookups(settled, tmp_path) == {"hit": 9, "miss": 0, "store": 0}


def test_dedup_never_crosses_roots_or_differing_options(settled, tmp_path):
    d = kernel_dirs(settled)[0]
    other = tmp_path / "rank_1"
    other.mkdir()
    shutil.copytree(d, other / d.name)  # same key and bytes in another root (another rank)
    differs = clone_under_new_key(d, settled, 7200)
    edit_metadata(differs, lambda m: m.update(num_warps=8))
    plan = plan_dedup(kernels(settled) + kernels(other))
    assert plan.actions == []


def test_gc_evicts_least_recently_used_to_fit(settled):
    entries = sorted(kernels(settled), key=lambda e: e.key)
    for i, e in enumerate(entries):  # entry i was last used i hours + 2h ago: 0 is newest
        age(e.path, 7200 + i * 3600)
    module = settled / ("M" * 52)
    module.mkdir()
    (module / "cuda_utils.so").write_bytes(b"\x7fELF" * 1000)
    age(module, 10 * 86400)
    entries = list(scan_root(settled))
    total = sum(e.size for e in entries)
    budget = total - 1  # one byte over: exactly one entry must go, the oldest kernel
    plan = plan_gc(entries, max_size=budget)
    assert [a.entry.key for a in plan.actions] == [
        sorted(kernels(settled), key=lambda e: e.key)[-1].key
    ]
    big = plan_gc(entries, max_size=0)
    assert len(big.actions) == 9  # every kernel, never the module
    assert any("not evictable" in n for n in big.notes)
    by_age = plan_gc(entries, max_age=(7200 + 6.5 * 3600))
    assert len(by_age.actions) == 2  # used 8h and 10h ago (i = 7, 8)


def test_gc_uses_tracked_last_use_when_present(settled):
    entries = kernels(settled)
    newest_on_disk = max(entries, key=lambda e: e.mtime)
    last_used = {(str(e.root), e.key): 1e9 for e in entries}  # all used long ago ...
    last_used[(str(newest_on_disk.root), newest_on_disk.key)] = 0.0  # ... this one even before
    plan = plan_gc(entries, max_size=sum(e.size for e in entries) - 1, last_used=last_used)
    assert [a.entry.key for a in plan.actions] == [newest_on_disk.key]


def test_gc_and_full_never_touch_writes_in_progress(settled):
    a, b = kernel_dirs(settled)[:2]
    (a / "tmp.pid_42_x").mkdir()  # Triton is writing into a
    (b / "new.ttir").write_text("just written")  # b changed a moment ago
    plan = plan_gc(list(scan_root(settled)), max_size=0)
    assert {a.name, b.name}.isdisjoint(x.entry.key for x in plan.actions)
    assert {e.key for e, _ in plan.skipped} == {a.name, b.name}
    assert {e.key for e, _ in plan_full(kernels(settled)).skipped} == {a.name, b.name}


def test_a_vanished_entry_fails_alone(settled):
    plan = plan_full(kernels(settled))
    shutil.rmtree(plan.actions[0].entry.path)
    result = apply(plan)
    assert len(result.done) == 8 and len(result.failed) == 1
    assert "is gone" in result.failed[0][1]


def test_interrupted_removal_is_reconciled(settled, tmp_path):
    """A run killed mid-way: the removed entries are gone whole, the rest whole too, and the
    next index and prune reconcile (trash purged, index matches the disk)."""
    db = tmp_path / "i.db"
    with Index(db) as idx:
        idx.update([Root(settled, "explicit")])
    # the state a kill between rename and delete leaves
    victim = kernel_dirs(settled)[0]
    (settled / TRASH).mkdir()
    os.rename(victim, settled / TRASH / f"{victim.name}.1.0")

    def stop_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        apply(plan_full(kernels(settled)), progress=stop_after_two)
    left = kernels(settled)
    assert len(left) == 6 and all(e.lookup == "hit" for e in left)
    with Index(db) as idx:
        stats = idx.update([Root(settled, "explicit")])
        assert stats.removed == 3 and idx.count() == 6
    assert purge_trash(settled) == 1 and not (settled / TRASH).exists()


def test_lock_serialises_tcm_runs(settled, tcm):
    with locked(settled):
        proc = tcm("prune", "-c", settled, "-y", ok=4)
        assert "another tcm" in proc.stderr and str(os.getpid()) in proc.stderr
        with locked(settled):  # re-entrant: the operations nest their locks in one process
            assert (settled / LOCK_NAME).read_text() == str(os.getpid())
    tcm("prune", "-c", settled, "-y")  # free again
    fd = os.open(settled / LOCK_NAME, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it after the run
    os.close(fd)


def test_cli_prune_confirmation_dry_run_and_json(settled, tcm):
    dry = tcm("prune", "-c", settled, "--dry-run")
    assert "ir: " in dry.stdout and "from 9 entries" in dry.stdout
    assert all(any(p.suffix == ".ttir" for p in d.iterdir()) for d in kernel_dirs(settled))
    refused = tcm("prune", "-c", settled, ok=2)  # no terminal to ask on
    assert "--yes" in refused.stderr
    assert "--yes or --dry-run" in tcm("prune", "-c", settled, "--json", ok=2).stderr
    report = json.loads(tcm("prune", "-c", settled, "--name", "add_kernel", "-y", "--json").stdout)
    assert report["entries"] == 6 and report["result"]["done"] == 6
    assert report["result"]["freed"] == report["bytes"]
    rows = json.loads(tcm("list", "-c", settled, "--json").stdout)
    assert sum(r["size"] for r in rows) == sum(e.size for e in kernels(settled))  # index updated
    assert "--full and --dedup" in tcm("prune", "--full", "--dedup", ok=2).stderr


def test_cli_dedup_and_gc(settled, tcm):
    for d in kernel_dirs(settled):
        age(d, 3600)
    clone_under_new_key(kernel_dirs(settled)[0], settled, 7200)
    out = tcm("prune", "-c", settled, "--dedup", "-y").stdout
    assert "duplicate of" in out and "freed" in out
    assert len(kernels(settled)) == 9
    assert "give --max-size" in tcm("gc", "-c", settled, ok=2).stderr
    report = json.loads(tcm("gc", "-c", settled, "--max-size", "100K", "-y", "--json").stdout)
    assert sum(e.size for e in scan_root(settled)) <= 100 * 1024
    assert report["result"]["done"] == report["entries"] > 0


def test_read_only_entry_fails_alone_and_stays_whole(settled, tmp_path):
    """One entry the process may not write is reported and left exactly as it was; the
    others are pruned."""
    locked_entry = kernel_dirs(settled)[0]
    os.chmod(locked_entry, 0o555)
    before = sorted(os.listdir(locked_entry))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TCM_DB": str(tmp_path / "i.db"),
        "HOME": str(tmp_path),
    }
    try:
        proc = subprocess.run(
            honouring_file_modes(
                [sys.executable, "-m", "tcmtasks.cli", "prune", "-c", str(settled), "-y"]
            ),
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        os.chmod(locked_entry, 0o755)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert locked_entry.name[:12] in proc.stderr and "cannot rewrite its group" in proc.stderr
    assert "freed" in proc.stdout and "1 failed" in proc.stdout
    assert sorted(os.listdir(locked_entry)) == before
    pruned = [e for e in kernels(settled) if e.key != locked_entry.name]
    assert all(not any(f.kind == "ir" for f in e.files) for e in pruned)
    assert all(e.lookup == "hit" for e in kernels(settled))


def test_a_staged_group_left_by_a_crash_is_harmless_and_cleaned(settled):
    """A kill between staging a group and renaming it leaves a temp file Triton never reads."""
    from tcmtasks import diagnose, repair
    from tcmtasks.cache.groups import stage_group

    entry = kernel_dirs(settled)[0]
    name = kernel_name(entry)
    staged = stage_group(entry, name, {"x": "y"})
    e = {e.key: e for e in scan_root(settled)}[entry.name]
    assert e.lookup == "hit" and not e.problems  # a fresh one may be a run in progress
    age(Path(staged.tmp), 3600)
    (sick,) = diagnose(scan_root(settled))
    assert [p.code for p in sick.problems] == ["tcm-leftover"]
    assert [r.action for r in repair(sick)] == ["removed-leftover"]
    assert not Path(staged.tmp).exists() and diagnose(scan_root(settled)) == []


def test_a_reader_of_the_old_group_still_finds_its_files(settled):
    """Triton reads a group, then every file it lists (CompiledKernel loads them all): a prune
    that rewrites the group in between must not have deleted those files yet."""
    entry = next(e for e in scan_root(settled) if e.kind == "kernel" and e.name)
    grp = entry.path / f"__grp__{entry.name}.json"
    old = json.loads(grp.read_text())["child_paths"]
    assert any(p.endswith(".ttir") for p in old.values())
    worker = threading.Thread(target=apply, args=(plan_ir([entry]),))
    worker.start()
    while json.loads(grp.read_text())["child_paths"] == old:  # wait for the rewrite...
        time.sleep(0.001)
    for path in old.values():  # ...then load what the old group listed, as Triton would
        Path(path).read_bytes()
    worker.join()
    assert not any(Path(p).exists() for p in old.values() if p.endswith(".ttir"))


def _indexed(root, db):
    with Index(db) as idx:
        idx.update([Root(root, "explicit")])
        return idx.entries([root], with_metadata=True), idx


def test_dedup_uses_the_indexed_binary_hashes_and_they_follow_changes(settled, tmp_path):
    """Binaries are hashed once, when indexed; an entry rewritten the way Triton writes
    (a new dir renamed in) is re-read and re-hashed by the next refresh."""
    import hashlib

    originals = kernel_dirs(settled)
    for d in originals:
        age(d, 3600)  # the originals are the newest: they stay
    clones = [clone_under_new_key(d, settled, 7200) for d in originals[:2]]
    db = tmp_path / "i.db"
    entries, _ = _indexed(settled, db)
    binaries = [f for e in entries for f in e.files if f.kind == "binary"]
    assert binaries and all(f.sha256 for f in binaries)
    e0 = next(e for e in entries if e.key == clones[0].name)
    b0 = next(f for f in e0.files if f.kind == "binary")
    assert b0.sha256 == hashlib.sha256((e0.path / b0.name).read_bytes()).hexdigest()

    # the plan is the one hashing every binary from disk gives
    from_disk = plan_dedup(kernels(settled))
    from_index = plan_dedup(entries)
    assert sorted(a.entry.key for a in from_index.actions) == sorted(c.name for c in clones)
    assert sorted(a.reason for a in from_index.actions) == sorted(
        a.reason for a in from_disk.actions
    )

    # a clone whose binary changes (rewritten by rename, as Triton writes) is no longer a dup
    new = clones[0].with_name(clones[0].name + ".tmp")
    shutil.copytree(clones[0], new)
    (new / b0.name).write_bytes(b"\x7fELF another kernel entirely")
    shutil.rmtree(clones[0])
    new.rename(clones[0])
    age(clones[0], 7200)
    entries, _ = _indexed(settled, db)
    assert sorted(a.entry.key for a in plan_dedup(entries).actions) == [clones[1].name]


def test_an_index_without_hashes_still_dedups_from_disk(settled, tmp_path):
    """Rows indexed before tcm kept hashes (schema 3) have none: dedup reads the binaries."""
    originals = kernel_dirs(settled)
    for d in originals:
        age(d, 3600)
    clones = [clone_under_new_key(d, settled, 7200) for d in originals[:3]]
    db = tmp_path / "i.db"
    _indexed(settled, db)
    with Index(db) as idx:
        idx.conn.execute("UPDATE files SET sha256 = NULL")
        entries = idx.entries([settled], with_metadata=True)
    assert not any(f.sha256 for e in entries for f in e.files)
    assert sorted(a.entry.key for a in plan_dedup(entries).actions) == sorted(
        c.name for c in clones
    )
