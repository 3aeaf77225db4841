"""The ``tcm`` command end to end, as a user runs it (a real process, a real DB)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.support.variants import age, kernel_dirs


def test_index_then_list_rocm(tcm, cache):
    out = tcm("index", "--cache-dir", cache).stdout
    assert "9 entries (9 new" in out
    table = tcm("list", "--backend", "rocm").stdout
    assert table.count("hip:gfx942") == 3 and "cuda:90" not in table
    assert "3 of 9 entries" in table
    rows = json.loads(tcm("list", "--backend", "rocm", "--json").stdout)
    assert len(rows) == 3 and {r["backend"] for r in rows} == {"hip"}
    assert {r["lookup"] for r in rows} == {"hit"}


def test_list_filters_sort_and_kinds(tcm, cache):
    (cache / ("M" * 52)).mkdir()
    (cache / ("M" * 52) / "cuda_utils.so").write_bytes(b"\x7fELF")
    tcm("index", "-c", cache)
    names = [r["name"] for r in json.loads(tcm("list", "--sort", "-name", "--json").stdout)]
    assert names == ["softmax_kernel"] * 3 + ["add_kernel"] * 6
    assert len(json.loads(tcm("list", "--name", "add_*", "--arch", "sm90", "--json").stdout)) == 2
    assert json.loads(tcm("list", "--older-than", "1d", "--json").stdout) == []
    assert len(json.loads(tcm("list", "--younger-than", "1h", "--json").stdout)) == 9
    every = json.loads(tcm("list", "--all", "--json").stdout)
    assert len(every) == 10 and {"module", "kernel"} == {r["kind"] for r in every}
    assert len(json.loads(tcm("list", "--kind", "module", "--json").stdout)) == 1
    assert len(json.loads(tcm("list", "-t", "3.6", "--json").stdout)) == 9


def test_list_refreshes_and_drops_vanished_roots(tcm, cache, compiled_cache, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(compiled_cache[0], other)
    tcm("index", "-c", cache, "-c", other)
    assert len(json.loads(tcm("list", "--json").stdout)) == 18
    shutil.rmtree(kernel_dirs(cache)[0])
    shutil.rmtree(other)
    proc = tcm("list", "--json")
    assert len(json.loads(proc.stdout)) == 8
    assert "is gone" in proc.stderr
    assert len(json.loads(tcm("list", "--no-refresh", "--json").stdout)) == 8


def test_list_with_nothing_to_find_says_what_to_do(tcm):
    proc = tcm("list", ok=4)
    assert "no Triton cache found" in proc.stderr and "--cache-dir" in proc.stderr


def test_default_root_from_home(tcm, compiled_cache):
    shutil.copytree(compiled_cache[0], tcm.home / ".triton" / "cache")
    assert "9 entries" in tcm("index").stdout
    assert len(json.loads(tcm("list", "--json").stdout)) == 9


def test_show_by_prefix(tcm, cache):
    key = kernel_dirs(cache)[0].name
    tcm("index", "-c", cache)
    data = json.loads(tcm("show", key[:8], "--json").stdout)
    assert data["key"] == key and data["metadata"]["hash"]
    assert {f["kind"] for f in data["files"]} >= {"metadata", "binary", "group"}
    text = tcm("show", key[:8]).stdout
    assert key in text and "metadata" in text and "__grp__" in text
    assert "no entry" in tcm("show", "ZZZZZZ", ok=2).stderr


def test_show_ambiguous_prefix(tcm, cache):
    for suffix in ("A", "B"):
        shutil.copytree(kernel_dirs(cache)[0], cache / ("X" * 51 + suffix))
    tcm("index", "-c", cache)
    assert "matches 2 entries" in tcm("show", "XXXX", ok=2).stderr


def test_doctor_reports_then_fixes(tcm, h100_cache):
    proc = tcm("doctor", "-c", h100_cache, ok=1)
    assert proc.stdout.count("foreign-paths") == 3
    assert "3 with problems" in proc.stdout
    report = json.loads(tcm("doctor", "-c", h100_cache, "--json", ok=1).stdout)
    assert report["checked"] == 5 and len(report["entries"]) == 3
    fixed = tcm("doctor", "-c", h100_cache, "--fix")
    assert fixed.stdout.count("rewrote-group") == 3 and "healthy" in fixed.stdout
    tcm("doctor", "-c", h100_cache)
    rows = json.loads(tcm("list", "-c", h100_cache, "--json").stdout)
    assert {r["lookup"] for r in rows} == {"hit"}  # the index saw the fix


def test_doctor_removes_stale_tmp(tcm, cache):
    tmp = kernel_dirs(cache)[0] / "tmp.pid_9_x"
    tmp.mkdir()
    age(tmp, 7200)
    assert "stale-tmp" in tcm("doctor", "-c", cache, ok=1).stdout
    assert "removed-tmp" in tcm("doctor", "-c", cache, "--fix").stdout
    assert not tmp.exists()


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (("index", "-c", "/nonexistent/cache"), "does not exist", 4),
        (("list", "-c", "/nonexistent/cache"), "does not exist", 4),
        (("list", "--older-than", "3 days"), "bad age", 2),
        (("list", "--backend", "tpu"), "unknown backend", 2),
        (("list", "--sort", "colour"), "unknown sort key", 2),
        (("list", "-c", "{file}"), "is not a directory", 4),
        (("package", "{cache}", "oci:{tmp}/img:v1", "--level", "99"), "use 0-9", 2),
        (
            ("package", "{cache}", "oci:{tmp}/img:v1", "--compression", "zstd", "--level", "0"),
            "use 1-22",
            2,
        ),
        (("extract", "oci:{tmp}/none:v1", "--all", "-c", "{file}"), "(-c DIR)", 2),
        (
            ("warm", "--backend", "triton", "--kernels", "tutorials", "-o", "{file}"),
            "give a directory",
            2,
        ),
        (
            ("warm", "--backend", "torch", "--model", "opt-125m", "-o", "{tmp}/w", "--batch", "x"),
            "--batch takes whole numbers",
            2,
        ),
    ],
)
def test_bad_input_is_one_clear_line(tcm, cache, tmp_path, args, message, code):
    tcm("index", "-c", cache)
    (tmp_path / "a-file").write_text("not a dir")
    values = {"file": tmp_path / "a-file", "cache": cache, "tmp": tmp_path}
    proc = tcm(*(a.format(**values) for a in args), ok=code)
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "img").exists()  # a refused package leaves nothing


def test_corrupt_db(tcm, cache, tmp_path):
    (tmp_path / "index.db").write_text("garbage" * 200)
    proc = tcm("index", "-c", cache, ok=4)
    assert "damaged" in proc.stderr and "tcm index --rebuild" in proc.stderr
    assert "rm " not in proc.stderr  # never advice to delete: tracked hits live there


def test_help_explains_each_command(tcm):
    assert all(c in tcm("--help").stdout for c in ("index", "list", "show", "doctor"))
    assert "--older-than" in tcm("list", "--help").stdout
    assert "--fix" in tcm("doctor", "--help").stdout
    assert "--rescan" in tcm("index", "--help").stdout


def test_without_cache_dir_known_and_default_roots_both_count(tcm, cache, compiled_cache):
    tcm("index", "-c", cache)
    shutil.copytree(compiled_cache[0], tcm.home / ".triton" / "cache")
    assert "2 roots: 18 entries (9 new" in tcm("index").stdout
    rows = json.loads(tcm("list", "--json").stdout)
    assert {r["root"] for r in rows} == {str(cache), str(tcm.home / ".triton" / "cache")}
