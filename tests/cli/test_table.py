"""The plain table renderer: fits a terminal, never cuts data elsewhere, streams."""

from __future__ import annotations

import contextlib
import itertools

from tcmtasks.cli import table
from tcmtasks.cli.table import Column, cut, render

COLS = (
    Column("KEY"), Column("NAME", min_width=12), Column("TARGET", drop=3),
    Column("SIZE", right=True, drop=4), Column("HITS", right=True, drop=8),
    Column("STATUS"), Column("ROOT", min_width=10, cut_start=True, drop=2),
)  # fmt: skip


def _row(i: int, name: str = "a_rather_long_kernel_name_for_a_fused_softmax", hits: str = ""):
    root = f"/very/long/path/to/some/cache[gpu{i}]/triton/cache"
    return [(f"KEY{i:09d}…", None), (name, None), ("cuda:90", None), ("25.3 KiB", None),
            (hits, None), ("hit", "green"), (root, "dim")]  # fmt: skip


def _lines(rows, width, color=False):
    out: list[str] = []
    render(COLS, rows, out.append, width=width, color=color)
    return out


def test_80_columns_keep_what_matters_and_cut_with_an_ellipsis():
    lines = _lines([_row(i) for i in range(3)], 80)
    assert all(len(line.rstrip("\n")) <= 80 for line in lines)
    head = lines[0].split()
    assert head[:2] == ["KEY", "NAME"] and "STATUS" in head
    assert "HITS" not in head  # empty in every row: left out
    assert "a_rather_lon" in lines[1] and "…" in lines[1]  # NAME cut, not dropped


def test_wide_or_piped_output_keeps_every_value_whole():
    rows = [_row(i, hits="3/1") for i in range(3)]
    lines = _lines(rows, None)
    for i, line in enumerate(lines[1:]):
        assert "a_rather_long_kernel_name_for_a_fused_softmax" in line
        assert f"/very/long/path/to/some/cache[gpu{i}]/triton/cache" in line  # not markup
        assert "3/1" in line and "\033" not in line


def test_colours_only_when_asked():
    lines = _lines([_row(0)], None, color=True)
    assert "\033[1m" in lines[0] and "\033[32mhit" in lines[1]


def test_rows_are_written_as_they_come(monkeypatch):
    """Past the sample that sets the widths, rows are written as they are read: a reader
    that stops early (| head) never makes tcm produce the rest."""
    monkeypatch.setattr(table, "SAMPLE", 100)
    produced = 0

    def rows():
        nonlocal produced
        for i in itertools.count():
            produced += 1
            yield _row(i)
            if i > 5000:
                raise AssertionError("read past the sample")

    out = []

    class Stop(Exception):
        pass

    def write(line):
        out.append(line)
        if len(out) > 3:
            raise Stop

    with contextlib.suppress(Stop):
        render(COLS, rows(), write, width=None, color=False)
    assert len(out) == 4 and produced <= 104


def test_cut():
    assert cut("abcdef", 4) == "abc…"
    assert cut("/a/b/cdef", 5, from_start=True) == "…cdef"
    assert cut("abc", 3) == "abc"
