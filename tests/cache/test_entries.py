"""Reading real caches, and every odd thing docs/cache-formats.md ("Layout", "Metadata") say a root
can hold."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tcmtasks import EntryKind, FileKind, Target, scan_root
from tcmtasks.cache.entries import scan_entry
from tests.conftest import REPO, honouring_file_modes
from tests.support.variants import (
    age,
    as_triton_32,
    edit_metadata,
    hex_key,
    kernel_dirs,
    kernel_name,
    rekey,
)


def by_key(root: Path) -> dict:
    return {e.key: e for e in scan_root(root)}


def test_compiled_cache_reads_as_healthy_kernels_for_three_targets(cache, compiled_cache):
    entries = list(scan_root(cache))
    assert len(entries) == 9
    assert all(e.kind == EntryKind.KERNEL and e.lookup == "hit" for e in entries)
    assert all(not e.problems for e in entries), [e.problems for e in entries]
    assert {str(e.target) for e in entries} == {"cuda:80", "cuda:90", "hip:gfx942"}
    assert {e.name for e in entries} == {"add_kernel", "softmax_kernel"}
    assert {e.triton_version for e in entries} == {"3.6.0"}
    assert all(e.key_format == "base32" and len(e.key) == 52 for e in entries)
    # every hash the compiler reported is an entry's metadata hash
    hashes = {c["hash"] for c in compiled_cache[1]}
    assert {e.metadata["hash"] for e in entries} == hashes
    hip = [e for e in entries if e.target.backend == "hip"]
    assert all(e.target.warp_size == 64 and e.target.arch == "gfx942" for e in hip)
    assert all(
        {f.name.rsplit(".", 1)[1] for f in e.files_of(FileKind.BINARY)} == {"hsaco"} for e in hip
    )
    cuda = [e for e in entries if e.target.backend == "cuda"]
    assert all(e.files_of(FileKind.BINARY)[0].name.endswith(".cubin") for e in cuda)
    for e in entries:
        kinds = {f.kind for f in e.files}
        assert {
            FileKind.METADATA,
            FileKind.GROUP,
            FileKind.IR,
            FileKind.ASM,
            FileKind.BINARY,
            FileKind.SOURCE,
        } <= kinds
        assert e.size == sum(os.path.getsize(e.path / f.name) for f in e.files)
        assert e.mtime == max(os.path.getmtime(e.path / f.name) for f in e.files)


def test_h100_cache_modules_and_foreign_group_paths(h100_cache):
    entries = list(scan_root(h100_cache))
    kernels = [e for e in entries if e.kind == EntryKind.KERNEL]
    modules = [e for e in entries if e.kind == EntryKind.MODULE]
    assert len(kernels) == 3 and len(modules) == 2
    assert {m.name for m in modules} == {"__triton_launcher", "cuda_utils"}
    assert all(m.target is None and not m.problems for m in modules)
    for k in kernels:
        assert k.target == Target("cuda", "90", 32) and k.triton_version == "3.6.0"
        # the groups still point at /tmp/tc1, where the H100 run wrote them
        assert k.lookup == "miss"
        assert [p.code for p in k.problems] == ["foreign-paths"]
        assert "/tmp/tc1/" in k.problems[0].message


def test_triton_32_base64_keys_and_old_metadata(cache):
    entry = kernel_dirs(cache)[0]
    old = as_triton_32(entry)
    e = by_key(cache)[old.name]
    assert e.key_format == "base64" and len(e.key) == 43
    assert e.kind == EntryKind.KERNEL and e.lookup == "hit" and not e.problems
    assert e.triton_version is None and e.target is not None
    assert e.metadata["cluster_dims"] == [1, 1, 1]
    assert not e.files_of(FileKind.SOURCE)


def test_hex_keys_and_arch_as_int_or_string(cache):
    entries = kernel_dirs(cache)
    hexed = rekey(entries[0], hex_key(entries[0].name))
    edit_metadata(entries[1], lambda m: m["target"].update(arch=str(m["target"]["arch"])))
    found = by_key(cache)
    assert found[hexed.name].key_format == "hex" and found[hexed.name].lookup == "hit"
    assert found[entries[1].name].target.arch in ("80", "90", "gfx942")
    assert not found[entries[1].name].problems


def test_extra_env_keys_and_unknown_fields_are_kept_not_rejected(cache):
    entry = kernel_dirs(cache)[0]

    def future(meta: dict) -> None:
        meta["TRITON_F32_DEFAULT"] = "ieee"  # env vars that change compilation become keys
        meta["some_field_from_triton_4"] = {"x": 1}
        del meta["num_ctas"]

    edit_metadata(entry, future)
    e = by_key(cache)[entry.name]
    assert not e.problems and e.num_ctas is None
    assert e.metadata["TRITON_F32_DEFAULT"] == "ieee"


def test_modules_autotune_tmp_and_empty_dirs_are_recognised(cache):
    (cache / ("A" * 52)).mkdir()
    (cache / ("A" * 52) / "hip_utils.so").write_bytes(b"\x7fELF")
    (cache / ("B" * 52)).mkdir()
    (cache / ("B" * 52) / "__triton_launcher.so").write_bytes(b"\x7fELF")
    (cache / ("C" * 52)).mkdir()
    (cache / ("C" * 52) / "matmul_kernel.autotune.json").write_text('{"configs_timings": []}')
    (cache / ("D" * 52)).mkdir()
    (cache / ("D" * 52) / "tmp.pid_123_abc").mkdir()
    (cache / ("E" * 52)).mkdir()
    (cache / "stray-file.txt").write_text("not an entry")
    found = by_key(cache)
    assert found["A" * 52].kind == EntryKind.MODULE and found["A" * 52].name == "hip_utils"
    assert found["B" * 52].kind == EntryKind.MODULE
    assert found["C" * 52].kind == EntryKind.AUTOTUNE and found["C" * 52].name == "matmul_kernel"
    assert found["D" * 52].kind == EntryKind.IN_FLIGHT and not found["D" * 52].problems
    assert found["E" * 52].kind == EntryKind.EMPTY and not found["E" * 52].problems
    assert "stray-file.txt" not in found
    assert sum(1 for e in found.values() if e.kind == EntryKind.KERNEL) == 9


def test_stale_tmp_dir_is_a_warning_fresh_one_is_not(cache):
    entry = kernel_dirs(cache)[0]
    fresh = entry / "tmp.pid_1_fresh"
    fresh.mkdir()
    (fresh / "x.cubin").write_bytes(b"partial")
    e = by_key(cache)[entry.name]
    assert e.kind == EntryKind.KERNEL and not e.problems
    age(fresh, 2 * 3600)
    e = by_key(cache)[entry.name]
    assert [p.code for p in e.problems] == ["stale-tmp"]
    assert e.problems[0].severity == "warning"
    assert e.lookup == "hit"


def test_failed_compile_with_ir_but_no_metadata(cache):
    d = cache / ("F" * 52)
    d.mkdir()
    (d / "bad_kernel.ttir").write_text("module {}")
    (d / "bad_kernel.ttgir").write_text("module {}")
    e = by_key(cache)["F" * 52]
    assert e.kind == EntryKind.KERNEL and e.name == "bad_kernel" and e.lookup == "miss"
    assert [p.code for p in e.problems] == ["missing-metadata"]


def test_truncated_metadata_is_reported_not_raised(cache):
    entry = kernel_dirs(cache)[0]
    meta = entry / f"{kernel_name(entry)}.json"
    meta.write_text(meta.read_text()[:100])
    e = by_key(cache)[entry.name]
    assert "bad-metadata" in [p.code for p in e.problems]
    assert e.target is None and e.metadata is None


def test_truncated_group_is_reported_not_raised(cache):
    entry = kernel_dirs(cache)[0]
    grp = entry / f"__grp__{kernel_name(entry)}.json"
    grp.write_text(grp.read_text()[:40])
    e = by_key(cache)[entry.name]
    assert [p.code for p in e.problems] == ["bad-group"] and e.lookup == "miss"


def test_group_listing_missing_files(cache):
    entries = kernel_dirs(cache)
    # IR deleted without rewriting the group: metadata still resolves, Triton 3.6 still hits
    ir = next(entries[0].glob("*.ttgir"))
    ir.unlink()
    # binary deleted: Triton would take it as a hit and then fail to load
    binary = next(p for p in entries[1].iterdir() if p.suffix in (".cubin", ".hsaco"))
    binary.unlink()
    # metadata deleted: a miss
    (entries[2] / f"{kernel_name(entries[2])}.json").unlink()
    found = by_key(cache)
    first = found[entries[0].name]
    assert first.lookup == "hit"
    assert [(p.code, p.severity) for p in first.problems] == [("incomplete-group", "warning")]
    assert ir.name in first.problems[0].message
    second = found[entries[1].name]
    assert second.lookup == "broken"
    assert {p.code for p in second.problems} == {"broken-hit", "incomplete-group"}
    third = found[entries[2].name]
    assert third.lookup == "miss" and "missing-metadata" in [p.code for p in third.problems]


def test_group_pointing_at_another_cache(cache, tmp_path):
    """A copy whose original still exists "hits" through the original's files
    (docs/cache-formats.md, "Groups and the hit rule")."""
    entry = kernel_dirs(cache)[0]
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copytree(entry, moved / entry.name)
    e = by_key(moved)[entry.name]
    assert e.lookup == "foreign-hit"
    assert [p.code for p in e.problems] == ["foreign-paths"]
    assert str(cache) in e.problems[0].message
    shutil.rmtree(cache)
    e = by_key(moved)[entry.name]
    assert e.lookup == "miss" and [p.code for p in e.problems] == ["foreign-paths"]


def test_non_utf8_names(cache):
    bad_dir = os.fsdecode(b"bad\xffkey")
    os.mkdir(cache / bad_dir)
    entry = kernel_dirs(cache)[0]
    (entry / os.fsdecode(b"junk\xfe.ttir")).write_text("x")
    found = by_key(cache)
    bad = found["bad\\xffkey"]
    assert bad.kind == EntryKind.EMPTY and [p.code for p in bad.problems] == ["bad-name"]
    e = found[entry.name]
    assert "junk\\xfe.ttir" in {f.name for f in e.files}
    assert "bad-name" in [p.code for p in e.problems] and e.lookup == "hit"
    json.dumps([x.to_dict() for x in found.values()])  # JSON output cannot choke on them


def test_symlink_loop_and_symlinked_entries(cache):
    os.symlink("loop", cache / "loop")
    entry = kernel_dirs(cache)[0]
    os.symlink(entry, cache / ("L" * 52))
    os.symlink("nowhere", entry / "dangling.cubin")
    found = by_key(cache)
    assert [p.code for p in found["loop"].problems] == ["symlink"]
    assert found["loop"].kind == EntryKind.UNKNOWN
    assert [p.code for p in found["L" * 52].problems] == ["symlink"]
    assert "symlink" in [p.code for p in found[entry.name].problems]


def test_special_files_are_skipped(cache):
    entry = kernel_dirs(cache)[0]
    os.mkfifo(entry / "pipe.ptx")
    e = by_key(cache)[entry.name]
    assert "pipe.ptx" not in {f.name for f in e.files}
    assert "special-file" in [p.code for p in e.problems]


def test_unreadable_entry_dir(cache):
    """An entry the process may not read is reported; the other entries are read."""
    entry = kernel_dirs(cache)[0]
    os.chmod(entry, 0)
    code = (
        "import json, sys; from tcmtasks import scan_root; "
        "print(json.dumps([e.to_dict() for e in scan_root(sys.argv[1])]))"
    )
    try:
        proc = subprocess.run(
            honouring_file_modes([sys.executable, "-c", code, str(cache)]),
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    finally:
        os.chmod(entry, 0o755)
    assert proc.returncode == 0, proc.stderr
    found = {e["key"]: e for e in json.loads(proc.stdout)}
    assert [p["code"] for p in found[entry.name]["problems"]] == ["unreadable"]
    assert sum(1 for e in found.values() if e["lookup"] == "hit") == 8


def test_missing_root_is_a_clear_error(tmp_path):
    from tcmtasks import CacheError

    with pytest.raises(CacheError, match="does not exist"):
        list(scan_root(tmp_path / "nope"))


def test_racy_fingerprint_is_empty_for_a_dir_changed_just_now(cache):
    entry = kernel_dirs(cache)[0]
    now = time.time()
    st = os.stat(entry)
    assert scan_entry(cache, entry.name, st, now=st.st_mtime + 0.5).fingerprint == ""
    assert scan_entry(cache, entry.name, st, now=now + 10).fingerprint != ""


@pytest.mark.parametrize(
    ("version", "lookup", "severity"),
    [
        ("3.6.0", "hit", "warning"),
        ("3.7.1", "hit", "warning"),
        ("3.8.0", "miss", "error"),
        ("3.9.0", "miss", "error"),
        (None, "hit", "warning"),
    ],
)
def test_missing_child_rule_follows_the_entry_triton_version(cache, version, lookup, severity):
    """3.8+ get_group misses when any listed child is gone; earlier versions drop it."""
    entry = kernel_dirs(cache)[0]
    edit_metadata(entry, lambda m: m.update(triton_version=version))
    next(entry.glob("*.llir")).unlink()
    e = by_key(cache)[entry.name]
    assert e.lookup == lookup
    assert [(p.code, p.severity) for p in e.problems] == [("incomplete-group", severity)]


@pytest.mark.parametrize(("version", "effect"), [("3.6.0", "fails"), ("3.7.0", "recompiles")])
def test_corrupt_group_effect_follows_the_entry_triton_version(cache, version, effect):
    entry = kernel_dirs(cache)[0]
    edit_metadata(entry, lambda m: m.update(triton_version=version))
    (entry / f"__grp__{kernel_name(entry)}.json").write_text("{not json")
    e = by_key(cache)[entry.name]
    assert e.lookup == "miss" and effect in e.problems[0].message
