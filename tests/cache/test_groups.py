"""Group files: tcm's verdict on a lookup must be the one Triton itself reaches."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tcmtasks import scan_root
from tcmtasks.cache.groups import (
    GroupFormatError,
    read_group,
    relocated_children,
    write_group,
)
from tests.conftest import REPO, compile_kernels, triton_env
from tests.support.variants import kernel_dirs, kernel_name


def cuda90(root):
    return sorted(
        (e for e in scan_root(root) if str(e.target) == "cuda:90"), key=lambda e: e.metadata["hash"]
    )


def test_verdicts_match_triton_lookups(cache, tmp_path):
    intact, no_ir, no_meta = cuda90(cache)
    next(no_ir.path.glob("*.ttgir")).unlink()  # group not rewritten: 3.6 drops the child
    (no_meta.path / f"{no_meta.name}.json").unlink()
    verdicts = {e.key: e.lookup for e in scan_root(cache)}
    assert [verdicts[e.key] for e in (intact, no_ir, no_meta)] == ["hit", "hit", "miss"]

    events = tmp_path / "events.log"
    compile_kernels(cache, ["cuda:90"], events)
    seen = {}
    for line in events.read_text().splitlines():
        ev = json.loads(line)
        seen.setdefault(ev["key"], ev["event"])  # the first event per key is the lookup
    assert seen == {intact.key: "hit", no_ir.key: "hit", no_meta.key: "miss"}


def test_broken_verdict_is_a_triton_load_failure(cache):
    entry = cuda90(cache)[0]
    (entry.path / f"{entry.name}.cubin").unlink()
    assert {e.key: e.lookup for e in scan_root(cache)}[entry.key] == "broken"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.compile_kernels", "cuda:90"],
        env=triton_env(cache),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "KeyError" in proc.stderr


def test_read_group_rejects_what_triton_cannot_use(tmp_path):
    p = tmp_path / "__grp__k.json"
    for text in (
        "{trunc",
        "[]",
        '{"child_paths": 3}',
        '{"other": {}}',
        '{"child_paths": {"a": 1}}',
    ):
        p.write_text(text)
        try:
            read_group(p)
        except GroupFormatError:
            continue
        raise AssertionError(f"accepted {text!r}")
    p.write_text('{"child_paths": {"k.json": "/x/k.json"}}')
    assert read_group(p) == {"k.json": "/x/k.json"}


def test_write_group_is_atomic_in_triton_shape_and_keeps_mtime(cache):
    entry = kernel_dirs(cache)[0]
    name = kernel_name(entry)
    grp = entry / f"__grp__{name}.json"
    os.utime(grp, (1_000_000_000, 1_000_000_000))
    children = relocated_children(entry, read_group(grp))
    write_group(entry, name, children)
    assert json.loads(grp.read_text()) == {"child_paths": children}
    assert grp.stat().st_mtime == 1_000_000_000
    assert sorted(os.listdir(entry)) == sorted([*children, grp.name])  # no temp file left


def test_relocated_children_drops_files_the_entry_lacks(cache):
    entry = kernel_dirs(cache)[0]
    name = kernel_name(entry)
    (entry / f"{name}.llir").unlink()
    children = {c: f"/elsewhere/{c}" for c in read_group(entry / f"__grp__{name}.json")}
    out = relocated_children(entry, children)
    assert f"{name}.llir" not in out
    assert all(p == str(entry / c) for c, p in out.items())
    assert len(out) == len(children) - 1


def test_read_capped_reads_whole_files_and_stops_past_the_cap(tmp_path):
    from tcmtasks.cache.groups import read_capped

    p = tmp_path / "f"
    for n in (0, 1, 4095, 70000):
        data = os.urandom(n)
        p.write_bytes(data)
        assert read_capped(p) == data
        assert read_capped(p, cap=100) == data[:101]  # the caller sees it is over and refuses
    p.write_bytes(b"x" * 10)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert read_capped("f", dir_fd=dir_fd) == b"x" * 10
    finally:
        os.close(dir_fd)
    # a device reports size 0 and never ends: read up to the cap, then refused by the caller
    assert read_capped("/dev/zero", cap=200_000) == bytes(200_001)
