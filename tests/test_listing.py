"""Listings stream from the index: SQL's order and JSON must be exactly Python's."""

from __future__ import annotations

import json
import shutil

import pytest

from tcmtasks import Criteria, Index, select
from tcmtasks.cache.roots import Root
from tcmtasks.selection import SORT_KEYS, sql_order
from tests.support.variants import age, kernel_dirs


@pytest.fixture
def varied_index(cache, tmp_path):
    """Two roots holding the same keys (ties across roots), one entry with problems, one
    with NULL name and target, hits and uses on some, equal mtimes on others."""
    other = tmp_path / "other"
    shutil.copytree(cache, other, symlinks=True)
    dirs = kernel_dirs(other)
    (dirs[1] / "junk.json").write_text("{not json")  # a problem
    for i, d in enumerate(kernel_dirs(cache) + dirs):
        age(d, 3600 * (i % 3))  # equal ages: ties on age and mtime
    with Index(tmp_path / "i.db") as idx:
        idx.update([Root(cache, "explicit"), Root(other, "explicit")])
        ids = [r[0] for r in idx.conn.execute("SELECT id FROM entries ORDER BY key, root_id")]
        for n, i in enumerate(ids[::2]):
            idx.conn.execute(
                "UPDATE entries SET hits = ?, misses = 1, last_used = ? WHERE id = ?",
                (n % 3, 1_700_000_000.0 + n % 2, i),
            )
        idx.conn.execute(
            "UPDATE entries SET backend = NULL, arch = '90' WHERE id = ?", (ids[1],)
        )  # an arch without a backend sorts as no target, as in Python
        idx.conn.execute("UPDATE entries SET name = NULL WHERE id = ?", (ids[2],))
    return tmp_path / "i.db"


@pytest.mark.parametrize("sort", [*SORT_KEYS, *(f"-{k}" for k in SORT_KEYS)])
def test_sql_order_is_pythons(varied_index, sort):
    with Index(varied_index) as idx:
        everything = idx.entries()
        assert len(everything) > 10
        want = [(str(e.root), e.key) for e in select(everything, Criteria(kinds=[]), sort=sort)]
        got = [(str(e.root), e.key) for e in idx.iter_entries(order=sql_order(sort))]
        no_files = [
            (str(e.root), e.key) for e in idx.iter_entries(order=sql_order(sort), with_files=False)
        ]
    assert got == want
    assert no_files == want


def test_json_from_sqlite_is_to_dict(varied_index):
    with Index(varied_index) as idx:
        dicts = [e.to_dict(files=False) for e in idx.iter_entries()]
        texts = [json.loads(t) for _, t in idx.iter_entry_json()]
        lite = [e.to_dict(files=False) for e in idx.iter_entries(with_files=False)]
    assert any(d["problems"] for d in dicts) and any(d["name"] is None for d in dicts)
    assert any(d["last_used"] for d in dicts) and any(d["target"] is None for d in dicts)
    assert texts == dicts
    assert lite == dicts  # indexed size and file count are the files' own


def test_files_follow_their_entries_in_any_order(varied_index):
    with Index(varied_index) as idx:
        by_key = {(str(e.root), e.key): e.files for e in idx.entries()}
        for sort in ("-size", "name", "used"):
            for e in idx.iter_entries(order=sql_order(sort)):
                assert e.files == by_key[str(e.root), e.key]
                assert e.files
