"""Output is the data: never markup, never wrapped off a terminal, a failure said once."""

from __future__ import annotations

import json
import shutil
import sys

from tests.conftest import REPO


def test_paths_with_brackets_are_printed_as_they_are(tcm, cache, tmp_path):
    odd = tmp_path / "x[/]y" / ("a-long-directory-name-" * 4) / "cache[gpu0]"
    shutil.copytree(cache, odd)
    indexed = tcm("index", "-c", odd)
    assert str(odd) in indexed.stdout and "Traceback" not in indexed.stderr
    table = tcm("list", "-c", odd, "-c", cache).stdout  # two roots: a ROOT column
    rows = [line for line in table.splitlines() if "add_kernel" in line or "softmax" in line]
    assert len(rows) == 18
    assert sum(str(odd) in r for r in rows) == 9  # whole, on the row's own line: not wrapped
    assert all(len(r.split()) >= 8 for r in rows)
    listed = json.loads(tcm("list", "-c", odd, "--json").stdout)
    assert {e["root"] for e in listed} == {str(odd)}


def test_errors_are_one_unwrapped_line_with_the_value_as_given(tcm, tmp_path):
    long = tmp_path / ("n" * 120) / "cache[gpu0]"
    proc = tcm("list", "-c", long, ok=4)
    assert proc.stderr.count("\n") == 1 and str(long) in proc.stderr
    proc = tcm("package", tmp_path, f"oci:{tmp_path}/img:v1", "--target", "cuda:100:", ok=2)
    assert "'cuda:100:'" in proc.stderr  # not an emoji, not markup


def test_a_failed_warm_says_so_once_and_not_warmed(tcm, tmp_path):
    proc = tcm("warm", "--backend", "command", "-o", tmp_path / "w", "--", sys.executable,
               "-c", "raise SystemExit(3)", ok=3, extra_env={"PYTHONPATH": str(REPO)})  # fmt: skip
    assert "warmed" not in proc.stdout + proc.stderr
    assert proc.stderr.count("exited with 3") == 1
