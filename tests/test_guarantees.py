"""What tcm promises against hostile inputs and a hostile environment (README, "Guarantees"):
nothing outside the given roots is read as ours, written or deleted; nothing is lost on a
crash, a failed rename or a full disk; memory and disk stay bounded on any input; errors say
what happened. Each test reproduces one way the earlier code failed."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tcmtasks import extract as extract_mod
from tcmtasks import install as install_mod
from tcmtasks import ops
from tcmtasks.errors import DiskFull, HostileImage, ImageError, os_error
from tcmtasks.extract import extract, purge_stale_staging
from tcmtasks.oci.image import MT_LAYER, MT_MANIFEST, canonical
from tcmtasks.oci.layout import OciLayout
from tcmtasks.producer import Producer
from tests.conftest import REPO, compile_kernels, lookups
from tests.oci.test_image import build
from tests.support.images import entry_members, image_from, layer_files, tar_bytes

HOST = Producer(triton_version="3.6.0")


def tree(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "link" if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return out


def aged(cache: Path, seconds: float = 7200) -> Path:
    t = time.time() - seconds
    for p in cache.rglob("*"):
        os.utime(p, (t, t), follow_symlinks=False)
    return cache


@pytest.fixture
def victim(tmp_path) -> Path:
    """Files outside every cache that tcm must never touch."""
    v = tmp_path / "victim"
    v.mkdir()
    (v / "precious.txt").write_text("keep me")
    (v / "sub").mkdir()
    (v / "sub" / "more.bin").write_bytes(b"\x00\x01")
    return v


# -- 1. nothing outside the given roots ---------------------------------------------------------


def test_a_symlinked_trash_is_never_followed(tcm, cache, victim):
    (cache / ".tcm-trash").symlink_to(victim)
    before = tree(victim)
    for args in (["prune", "--dry-run"], ["gc", "--max-size", "0", "--dry-run"],
                 ["prune", "--full", "-y"]):  # fmt: skip
        proc = tcm(*args, "-c", aged(cache), ok=4)
        assert "not tcm's trash" in proc.stderr and "symbolic link" in proc.stderr
    assert tree(victim) == before


def test_a_symlinked_lock_file_is_never_written(tcm, cache, victim):
    target = victim / "precious.txt"
    (cache / ".tcm.lock").symlink_to(target)
    proc = tcm("prune", "-c", aged(cache), "-y", ok=4)
    assert "symbolic link" in proc.stderr and "lock" in proc.stderr
    assert target.read_text() == "keep me"


def test_group_children_outside_their_entry_are_corruption(tcm, cache, victim, tmp_path):
    # a CUDA entry (HIP's binary is .hsaco); keys, hence dir order, vary between checkouts
    grp = next(g for g in sorted(cache.glob("*/__grp__*.json")) if any(g.parent.glob("*.cubin")))
    entry = grp.parent
    data = json.loads(grp.read_text())
    binary = next(c for c in data["child_paths"] if c.endswith(".cubin"))
    data["child_paths"][binary] = str(victim / "precious.txt")  # Triton would load this
    data["child_paths"]["../../escape"] = str(victim / "sub" / "more.bin")
    grp.write_text(json.dumps(data))
    proc = tcm("doctor", "-c", cache, ok=1)
    assert "foreign-paths" in proc.stdout and entry.name[:12] in proc.stdout
    tcm("doctor", "-c", cache, "--fix")
    fixed = json.loads(grp.read_text())["child_paths"]
    assert "../../escape" not in fixed and fixed[binary] == str(entry / binary)
    tcm("doctor", "-c", cache)  # healthy now
    # an image whose group names a path out of its entry installs nothing
    image = tmp_path / "img"
    _built, store = build(cache, image)
    layer = json.loads(store.manifest()[0])["layers"][0]
    members = layer_files(store, layer)
    name = next(n for n in members if n.endswith(grp.name))
    members[name] = json.dumps({"child_paths": {"../escape": "../escape"}}).encode()
    hostile = image_from(tmp_path / "hostile", members, {})
    dest = tmp_path / "node"
    with pytest.raises(HostileImage, match="a path out of its entry"):
        extract(hostile, dest, targets=None, host=HOST)
    assert not dest.exists() or not [p for p in dest.iterdir() if p.name != ".tcm.lock"]
    assert tree(victim)["precious.txt"] == b"keep me"


def test_gc_and_prune_never_act_on_a_root_only_the_index_remembers(tcm, cache):
    tcm("index", "-c", cache)  # the index now remembers it
    before = tree(aged(cache))
    for args in (["gc", "--max-size", "0", "-y"], ["prune", "--full", "-y"]):
        proc = tcm(*args, ok=4)  # no -c: only the caches found at the default places
        assert "no Triton cache found" in proc.stderr
    assert tree(cache) == before
    shown = tcm("prune", "--dry-run", "-c", cache).stdout
    assert f"roots: {cache}" in shown  # and with -c it says what it acts on


# -- 2. nothing lost on a crash, a failed rename, a full disk -----------------------------------


def test_a_failed_install_is_reported_not_claimed(cache, tmp_path, monkeypatch):
    _, store = build(cache, tmp_path / "img")
    real = os.rename

    def failing(src, dst):
        if ".tcm-staging-" in str(src) and ".tcm-staging-" not in str(dst):
            raise OSError(errno.EIO, "Input/output error", str(dst))
        return real(src, dst)

    monkeypatch.setattr(extract_mod.os, "rename", failing)
    report = extract(store, tmp_path / "node", targets=None, host=HOST)
    assert report.kept == [] and len(report.failed) == 9
    assert all("not installed" in f["reason"] for f in report.failed)


def test_overwrite_swaps_in_one_step_and_falls_back_safely(cache, tmp_path, monkeypatch):
    _, store = build(cache, tmp_path / "img")
    dest = tmp_path / "node"
    extract(store, dest, targets=None, host=HOST)
    meta = next(dest.glob("*/*.json"))
    if meta.name.startswith("__grp__"):
        meta = next(p for p in dest.glob("*/*.json") if not p.name.startswith("__grp__"))
    gone: list[str] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if not meta.exists():
                gone.append("missing")

    t = threading.Thread(target=watch)
    t.start()
    for _ in range(5):
        report = extract(store, dest, targets=None, host=HOST, overwrite=True)
        assert len(report.kept) == 9
    stop.set()
    t.join()
    assert gone == []  # a reader never saw the entry missing (renameat2 RENAME_EXCHANGE)
    # where the file system cannot swap, the old entry comes back if the new one fails
    monkeypatch.setattr(install_mod, "exchange", lambda a, b: False)
    real = os.rename
    calls = {"n": 0}

    def second_fails(src, dst):
        calls["n"] += 1
        if ".tcm-staging-" in str(src) and calls["n"] % 3 == 2:
            raise OSError(errno.EIO, "Input/output error", str(dst))
        return real(src, dst)

    monkeypatch.setattr(extract_mod.os, "rename", second_fails)
    report = extract(store, dest, targets=None, host=HOST, overwrite=True)
    assert report.failed and all("was kept" in f["reason"] for f in report.failed)
    assert len([p for p in dest.iterdir() if p.is_dir() and not p.name.startswith(".")]) == 9
    events = tmp_path / "events.jsonl"
    compile_kernels(dest, events=events)
    assert lookups(events) == {"hit": 9, "miss": 0, "store": 0}


def test_spooled_events_of_a_killed_index_are_merged_by_the_next(tcm, cache, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    key = next(p.name for p in cache.iterdir() if p.is_dir())
    line = {"e": "hit", "key": key, "name": "k", "root": str(cache), "t": time.time()}
    # what a tcm index killed after taking the file, before committing, leaves behind
    (spool / "taken-999999-events-42.jsonl").write_text(json.dumps(line) + "\n")
    result = json.loads(tcm("index", "-c", cache, "--json",
                            extra_env={"TCM_TRACK_DIR": str(spool)}).stdout)  # fmt: skip
    assert result["tracked"] == 1 and not list(spool.iterdir())
    listed = json.loads(tcm("list", "-c", cache, "--min-hits", "1", "--json").stdout)
    assert [e["key"] for e in listed] == [key]


KILL_PARENT = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp
from tcmtasks.index import _die_with_parent
pool = ProcessPoolExecutor(2, mp_context=mp.get_context("fork"), initializer=_die_with_parent)
futures = [pool.submit(os.getpid) for _ in range(8)]
print(" ".join(str(p) for p in sorted({f.result() for f in futures})), flush=True)
time.sleep(60)
"""


def test_scan_workers_die_with_a_killed_index(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_PARENT], stdout=subprocess.PIPE, text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert workers and all(_running(p) for p in workers)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(p) for p in workers)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_leftover_staging_is_purged_even_under_pid_1(cache, tmp_path):
    _, store = build(cache, tmp_path / "img")
    dest = tmp_path / "node"
    dest.mkdir()
    for name in (".tcm-staging-1-deadbeef", ".tcm-staging-999999-cafe0000"):
        (dest / name / "KEY").mkdir(parents=True)  # a killed run's, pid 1 alive in containers
    assert purge_stale_staging(dest) == 2
    (dest / ".tcm-staging-1-again").mkdir()
    extract(store, dest, targets=None, host=HOST)
    assert not list(dest.glob(".tcm-staging-*"))


def test_a_failed_package_leaves_no_layout(cache, tmp_path, monkeypatch, db):
    from tcmtasks.ops import ship

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "img"))

    monkeypatch.setattr(ship, "build_image", full)
    with pytest.raises(DiskFull, match="disk is full"):
        ops.package(cache, f"oci:{tmp_path / 'img'}:v1")
    assert not (tmp_path / "img").exists()


def test_a_full_disk_says_so_and_keeps_nothing_partial(tcm, cache, tmp_path, tiny_fs):
    image = tmp_path / "img"
    tcm("package", cache, f"oci:{image}:v1")
    (tiny_fs / "already.txt").write_text("there before")
    proc = tcm("extract", f"oci:{image}:v1", "--all", "-c", tiny_fs / "cache", ok=5)
    assert "disk is full" in proc.stderr and str(tiny_fs) in proc.stderr
    assert "corrupt" not in proc.stderr
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["already.txt", "cache"]
    assert [p.name for p in (tiny_fs / "cache").iterdir()] == [".tcm.lock"]  # no partial entry
    free = os.statvfs(tiny_fs).f_bavail * os.statvfs(tiny_fs).f_frsize
    (tiny_fs / "filler").write_bytes(b"\0" * max(0, free - (16 << 10)))  # 16 KiB left
    proc = tcm("package", cache, f"oci:{tiny_fs / 'out'}:v1", ok=5)
    assert "disk is full" in proc.stderr and not (tiny_fs / "out").exists()


# -- 3. bounded memory and disk ----------------------------------------------------------------


def test_a_huge_tar_header_is_refused_before_it_is_read(tmp_path):
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = 2 << 30  # declares 2 GiB; tarfile alone would read all of it into memory
    header = pax.tobuf(format=tarfile.USTAR_FORMAT)
    store = image_from(tmp_path / "img", {}, {}, raw_layer=header + b"\0" * 4096)
    with pytest.raises(HostileImage, match="tar header extension"):
        extract(store, tmp_path / "node", targets=None, host=HOST)


def test_manifests_and_configs_over_4_mib_are_refused_unread(tmp_path):
    store = image_from(tmp_path / "img", {}, {})
    index = json.loads((tmp_path / "img" / "index.json").read_text())
    index["manifests"][0]["size"] = 1 << 30
    (tmp_path / "img" / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError, match="over the 4 MiB"):
        ops.inspect(f"oci:{tmp_path / 'img'}:v1")
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (tmp_path / "big" / "index.json").write_bytes(b" " * (5 << 20) + b"{}")
    with pytest.raises(ImageError, match="over the 4 MiB"):
        ops.inspect(f"oci:{tmp_path / 'big'}:v1")
    del store


def test_a_gzip_bomb_stops_at_what_the_image_declares(cache, tmp_path):
    _, store = build(cache, tmp_path / "img")
    layer = json.loads(store.manifest()[0])["layers"][0]
    members = layer_files(store, layer)
    key = next(n.split("/")[1] for n in members if n.startswith("io.triton.cache/"))
    members[f"io.triton.cache/{key}/zeros.ttir"] = b"\0" * (64 << 20)  # compresses to ~64 KiB
    labels = json.loads(
        (tmp_path / "img" / "blobs" / "sha256")
        .joinpath(json.loads(store.manifest()[0])["config"]["digest"].split(":")[1])
        .read_text()
    )["config"]["Labels"]
    bomb = image_from(tmp_path / "bomb", members, labels)
    dest = tmp_path / "node"
    with pytest.raises(HostileImage, match="unpacks to more than"):
        extract(bomb, dest, targets=None, host=HOST)
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) < 1 << 20


def test_deeply_nested_json_is_a_corrupt_file_not_a_crash(tcm, cache, tmp_path):
    deep = "[" * 200_000 + "]" * 200_000
    entries = sorted(p.parent for p in cache.glob("*/__grp__*.json"))
    meta = next(p for p in entries[0].glob("*.json") if not p.name.startswith("__grp__"))
    meta.write_text(deep)
    next(entries[1].glob("__grp__*.json")).write_text(deep)
    aged(cache)
    for args in (["list", "--all"], ["doctor"], ["prune", "--dry-run"],
                 ["gc", "--max-size", "0", "--dry-run"], ["index", "--rescan"]):  # fmt: skip
        proc = tcm(*args, "-c", cache, ok=None)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
        assert "RecursionError" not in proc.stdout + proc.stderr
    doctor = tcm("doctor", "-c", cache, ok=1).stdout
    assert "bad-metadata" in doctor and "bad-group" in doctor


# -- 4. errors that say what happened ----------------------------------------------------------


def test_a_damaged_index_is_rebuilt_keeping_tracked_hits(tcm, cache, tmp_path):
    db = tmp_path / "index.db"
    key = next(p.name for p in cache.iterdir() if p.is_dir())
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "events-1.jsonl").write_text(
        json.dumps({"e": "hit", "key": key, "name": "k", "root": str(cache), "t": time.time()})
        + "\n"
    )
    tcm("index", "-c", cache, extra_env={"TCM_TRACK_DIR": str(spool)})
    import sqlite3

    conn = sqlite3.connect(db)  # damage the files table, the one with the most pages
    root_page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'files'").fetchone()
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root_page[0] - 1) * page_size)
        f.write(os.urandom(page_size))
    proc = tcm("show", key, "-c", cache, ok=4)  # (a listing reads no files: it still works)
    assert "tcm index --rebuild" in proc.stderr and "rm " not in proc.stderr
    rebuilt = json.loads(tcm("index", "-c", cache, "--rebuild", "--json").stdout)
    assert rebuilt["rebuilt"]["salvaged"] == 1 and Path(rebuilt["rebuilt"]["backup"]).exists()
    listed = json.loads(tcm("list", "-c", cache, "--min-hits", "1", "--json").stdout)
    assert [e["key"] for e in listed] == [key]


def test_track_keeps_its_report_when_the_index_cannot_be_written(tcm, tmp_path):
    bad = tmp_path / "not-a-db"
    bad.write_text("garbage" * 100)
    proc = tcm(
        "--db", bad, "track", "-c", tmp_path / "cache", "--json", "--", sys.executable, "-m",
        "tests.support.compile_kernels", "cuda:90", extra_env={"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["misses"] == 3 and "damaged" in report["index_error"]
    assert "were not added to the index" in proc.stderr


def test_malformed_images_are_one_line_errors(tcm, tmp_path):
    cases = {
        "config-not-object": {"config": "a string"},
        "labels-not-strings": {"config": {"Labels": {"a": ["x"], "b": "[red]markup[/]"}}},
    }
    for name, doc in cases.items():
        store = OciLayout(tmp_path / name, "v1", create=True)
        config = store.add_blob_bytes(canonical(doc), "application/json")
        layer = store.add_blob_bytes(b"\0" * 1024, MT_LAYER["none"])
        store.put_manifest(
            canonical({"schemaVersion": 2, "mediaType": MT_MANIFEST,
                       "config": config.descriptor(), "layers": [layer.descriptor()]}),
            MT_MANIFEST,
        )  # fmt: skip
        proc = tcm("inspect", f"oci:{tmp_path / name}:v1", ok=None)
        assert proc.returncode in (0, 3) and "Traceback" not in proc.stderr, proc.stderr
        assert "internal error" not in proc.stderr
        if name == "labels-not-strings":
            assert "[red]markup[/]" in proc.stdout  # data is printed, never interpreted
    (tmp_path / "nomanifest" / "blobs").mkdir(parents=True)
    (tmp_path / "nomanifest" / "oci-layout").write_text("{}")
    (tmp_path / "nomanifest" / "index.json").write_text('{"manifests": "nope"}')
    proc = tcm("inspect", f"oci:{tmp_path / 'nomanifest'}:v1", ok=3)
    assert "Traceback" not in proc.stderr


def test_a_read_only_destination_is_a_clear_error(tcm, cache, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        from tests.conftest import honouring_file_modes

        proc = subprocess.run(
            honouring_file_modes([sys.executable, "-m", "tcmtasks.cli", "package", str(cache),
                                  f"oci:{ro / 'img'}:v1"]),
            capture_output=True, text=True, env={**tcm.env, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        assert proc.returncode == 4 and "Traceback" not in proc.stderr, proc.stderr
        assert str(ro) in proc.stderr and "permissions" in proc.stderr
    finally:
        ro.chmod(0o755)


def test_a_full_disk_is_not_called_a_corrupt_layer():
    err = os_error(OSError(errno.ENOSPC, "No space left on device"), "write", "/x")
    assert isinstance(err, DiskFull) and "disk is full" in str(err) and "/x" in str(err)


def test_dests_cannot_multiply_a_layer_past_the_caps(cache, tmp_path):
    """One entry with a 10 MiB file sent to 200 places had installed 2.0 GiB from an image
    declaring 10 MiB, --max-size 20M notwithstanding: each copy now counts against the cap,
    and the restore stops before anything is installed."""
    key, own, row, labels = entry_members(cache, tmp_path)
    own[f"io.triton.cache/{key}/pad.ttir"] = os.urandom(10 << 20)
    dests = [["vllm", f"torch_compile_cache/h/rank_{i}_0/triton_cache"] for i in range(200)]
    doc = {"triton": [{**row, "dests": dests}]}
    members = {"io.triton.manifest/manifest.json": canonical(doc), **own}
    store = image_from(tmp_path / "amp", members, labels)
    vllm = tmp_path / "vllm"
    dests_obj = extract_mod.Destinations(tmp_path / "t", tmp_path / "ind", vllm)
    with pytest.raises(HostileImage, match="copied for each place the manifest names"):
        extract(store, tmp_path / "t", targets=None, host=HOST, dests=dests_obj,
                max_total=20 << 20)  # fmt: skip
    written = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()
                  and "vllm" in p.parts)  # fmt: skip
    assert written < 40 << 20  # the streamed layer and at most the copies the cap allowed
    assert not list(vllm.rglob("__grp__*.json")) or all(
        ".tcm-staging-" in str(p) for p in vllm.rglob("__grp__*.json")
    )
    assert not list(vllm.rglob(".tcm-staging-*"))  # staging removed


def test_more_places_than_vllm_ranks_is_refused(cache, tmp_path):
    _key, own, row, labels = entry_members(cache, tmp_path)
    dests = [["vllm", f"torch_compile_cache/h/rank_{i}_0/triton_cache"] for i in range(1025)]
    members = {"io.triton.manifest/manifest.json": canonical({"triton": [{**row,
               "dests": dests}]}), **own}  # fmt: skip
    store = image_from(tmp_path / "amp", members, labels)
    with pytest.raises(HostileImage, match="to 1025 places"):
        extract(store, tmp_path / "t", targets=None, host=HOST)


def test_more_members_than_the_manifest_ships_is_refused(cache, tmp_path):
    """A 7 MB layer declaring nothing had unpacked to 1,000,000 empty files: the member count
    is now bounded by what the manifest lists (here one entry's files, and slack)."""
    key, own, row, labels = entry_members(cache, tmp_path)
    members = {"io.triton.manifest/manifest.json": canonical({"triton": [row]}), **own}
    members.update({f"io.triton.cache/{key}/x{i}.ttir": b"" for i in range(5000)})
    store = image_from(tmp_path / "many", members, labels)
    node = tmp_path / "node"
    with pytest.raises(HostileImage, match=r"more than 10\d\d members"):
        extract(store, node, targets=None, host=HOST)
    assert not [p for p in node.rglob("*") if p.is_file() and ".tcm" not in p.name]


def test_data_after_the_archives_end_is_counted_and_refused(cache, tmp_path):
    key, own, row, labels = entry_members(cache, tmp_path)
    members = {"io.triton.manifest/manifest.json": canonical({"triton": [row]}), **own}
    good = tar_bytes(members)
    node = tmp_path / "node"
    padded = image_from(tmp_path / "pad", {}, labels, raw_layer=good + b"\0" * 10240)
    assert len(extract(padded, node, targets=None, host=HOST).kept) == 1  # a tar's own padding
    bomb = image_from(tmp_path / "trail", {}, labels, raw_layer=good + b"\0" * (8 << 20))
    with pytest.raises(HostileImage, match="after the archive's end"):
        extract(bomb, tmp_path / "node2", targets=None, host=HOST)
    assert not list((tmp_path / "node2").glob(f"{key}/*"))
