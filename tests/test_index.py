"""The SQLite index: contents, incremental updates, several roots, schema versions."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

import tcmtasks.index as index_mod
from tcmtasks import Index, scan_root
from tcmtasks.cache.roots import Root
from tcmtasks.errors import IndexDbError
from tests.support.variants import age, kernel_dirs


def settle(root):
    """Age every entry dir past the racy window, as caches are when tcm indexes them."""
    for d in root.iterdir():
        age(d, 60)


@pytest.fixture
def counted_scans(monkeypatch):
    """Count the entries the index actually opens (a spy; scanning still runs for real)."""
    calls = []
    real = index_mod.scan_entry

    def spy(root, name, *a, **kw):
        calls.append(name)
        return real(root, name, *a, **kw)

    monkeypatch.setattr(index_mod, "scan_entry", spy)
    return calls


def test_index_holds_what_the_scan_sees(cache, tmp_path):
    with Index(tmp_path / "i.db") as idx:
        stats = idx.update([Root(cache, "explicit")])
        assert (stats.added, stats.removed, stats.seen) == (9, 0, 9)
        got = {e.key: e for e in idx.entries(with_metadata=True)}
    want = {e.key: e for e in scan_root(cache)}
    assert got.keys() == want.keys()
    for key, e in want.items():
        g = got[key]
        hashed = {f.name for f in g.files if f.sha256}
        assert hashed == {f.name for f in e.files if f.kind == "binary"}  # only binaries
        files = tuple(f._replace(sha256=None) for f in g.files)
        assert (g.name, g.target, g.triton_version, g.num_warps, g.num_stages, g.size,
                g.lookup, files, g.metadata) == (
            e.name, e.target, e.triton_version, e.num_warps, e.num_stages, e.size, e.lookup,
            e.files, e.metadata)  # fmt: skip
    rows = (
        sqlite3.connect(tmp_path / "i.db")
        .execute("SELECT count(*), count(DISTINCT kind) FROM files")
        .fetchone()
    )
    assert rows == (
        sum(len(e.files) for e in want.values()),
        6,
    )  # metadata group ir asm binary source


def test_named_metadata_fields_are_the_scans_values(cache, tmp_path):
    """An image manifest's fields picked by SQLite equal the scanned metadata's, with their
    JSON types (a string, null, a bool, a nested object); absent ones are None."""
    want = {e.key: e.metadata for e in scan_root(cache)}
    fields = ("hash", "ptx_version", "debug", "target", "no_such_field")
    with Index(tmp_path / "i.db") as idx:
        idx.update([Root(cache, "explicit")])
        got = idx.entries(with_metadata=fields)
        assert len(got) == len(want) and all(e.metadata_text is None for e in got)
        for e in got:
            if want[e.key] is None:
                assert e.metadata is None
            else:
                assert e.metadata == {f: want[e.key].get(f) for f in fields}
        assert isinstance(got[0].metadata["target"], dict)
        single = [e for e in idx.entries(with_metadata=("hash",)) if want[e.key]]
        assert len(single) >= 3  # one field: still a dict of it, not a bare value
        assert all(e.metadata == {"hash": want[e.key]["hash"]} for e in single)
        with pytest.raises(ValueError, match="plain names"):
            idx.entries(with_metadata=("hash", "x') OR 1=1 --"))


def test_reindex_unchanged_opens_nothing(cache, tmp_path, counted_scans):
    settle(cache)
    with Index(tmp_path / "i.db") as idx:
        idx.update([Root(cache, "explicit")])
        assert len(counted_scans) == 9
        counted_scans.clear()
        stats = idx.update([Root(cache, "explicit")])
    assert counted_scans == []
    assert (stats.unchanged, stats.added, stats.updated, stats.removed) == (9, 0, 0, 0)


def test_changed_added_and_removed_entries(cache, tmp_path, counted_scans):
    settle(cache)
    a, b, c = kernel_dirs(cache)[:3]
    with Index(tmp_path / "i.db") as idx:
        idx.update([Root(cache, "explicit")])
        counted_scans.clear()
        next(a.glob("*.ttir")).unlink()  # changes a's dir
        shutil.rmtree(b)  # gone
        shutil.copytree(c, cache / ("Q" * 52))  # new
        for d in (a, cache / ("Q" * 52)):
            age(d, 60)
        stats = idx.update([Root(cache, "explicit")])
        keys = {e.key: e for e in idx.entries()}
    assert sorted(counted_scans) == sorted([a.name, "Q" * 52])
    assert (stats.added, stats.updated, stats.removed, stats.unchanged) == (1, 1, 1, 7)
    assert b.name not in keys and "Q" * 52 in keys
    assert not any(f.name.endswith(".ttir") for f in keys[a.name].files)


def test_racy_entries_are_read_again(cache, tmp_path, counted_scans):
    """A dir changed within the mtime tick of indexing is never trusted as unchanged."""
    for d in cache.iterdir():
        os.utime(d)  # changed just now
    with Index(tmp_path / "i.db") as idx:
        idx.update([Root(cache, "explicit")])
        counted_scans.clear()
        idx.update([Root(cache, "explicit")])
    assert len(counted_scans) == 9  # all were fresh: read again rather than risk a stale row


def test_rescan_reads_in_place_edits(cache, tmp_path):
    settle(cache)
    entry = kernel_dirs(cache)[0]
    ir = next(entry.glob("*.ttir"))
    with Index(tmp_path / "i.db") as idx:
        idx.update([Root(cache, "explicit")])
        with open(ir, "a") as f:  # in place: the dir's mtime and ctime do not move
            f.write("// edited")
        idx.update([Root(cache, "explicit")])
        size = next(
            f.size
            for e in idx.entries()
            if e.key == entry.name
            for f in e.files
            if f.name == ir.name
        )
        assert size == ir.stat().st_size - len("// edited")
        stats = idx.update([Root(cache, "explicit")], rescan=True)
        size = next(
            f.size
            for e in idx.entries()
            if e.key == entry.name
            for f in e.files
            if f.name == ir.name
        )
    assert stats.updated == 9 and size == ir.stat().st_size


def test_several_roots_in_one_db(cache, compiled_cache, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(compiled_cache[0], other)
    with Index(tmp_path / "i.db") as idx:
        idx.update([Root(cache, "explicit"), Root(other, "explicit")])
        assert idx.count() == 18
        assert len(idx.entries([cache])) == 9
        assert {r.path for r in idx.roots()} == {cache, other}
        # the same keys in both roots stay two entries
        assert len(idx.entries(keys=[kernel_dirs(cache)[0].name])) == 2
        assert idx.forget(other) == 9
        assert idx.count() == 9 and [r.path for r in idx.roots()] == [cache]


def test_prefix_lookup_escapes_like_wildcards(cache, tmp_path):
    with Index(tmp_path / "i.db") as idx:
        idx.update([Root(cache, "explicit")])
        key = kernel_dirs(cache)[0].name
        assert [e.key for e in idx.entries(keys=[key[:10]])] == [key]
        assert idx.entries(keys=["%"]) == [] and idx.entries(keys=["_"]) == []


def test_default_db_location(monkeypatch, tmp_path):
    monkeypatch.delenv("TCM_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert index_mod.default_db_path() == tmp_path / "xdg" / "tcm" / "index.db"
    monkeypatch.setenv("TCM_DB", str(tmp_path / "x.db"))
    assert index_mod.default_db_path() == tmp_path / "x.db"
    with Index() as idx:
        assert idx.path == tmp_path / "x.db" and idx.schema_version == index_mod.SCHEMA_VERSION


def test_migration_path_runs_new_steps_once(tmp_path, monkeypatch):
    path = tmp_path / "i.db"
    Index(path).close()
    calls = []
    nxt = max(index_mod.MIGRATIONS) + 1

    def step(db):
        calls.append(nxt)
        db["entries"].add_column("future", int)

    monkeypatch.setitem(index_mod.MIGRATIONS, nxt, step)
    with Index(path) as idx:
        assert idx.schema_version == nxt
        assert "future" in idx.db["entries"].columns_dict
    with Index(path) as idx:
        assert idx.schema_version == nxt
    assert calls == [nxt]


def test_a_v1_index_migrates_to_the_latest_keeping_its_entries(cache, tmp_path, monkeypatch):
    path = tmp_path / "i.db"
    with monkeypatch.context() as m:
        m.setattr(index_mod, "MIGRATIONS", {1: index_mod.MIGRATIONS[1]})
        with Index(path) as idx:
            idx.update([Root(cache, "explicit")])
            assert idx.schema_version == 1
            assert "hits" not in idx.db["entries"].columns_dict
    with Index(path) as idx:
        assert idx.schema_version == max(index_mod.MIGRATIONS) == 4
        entries = idx.entries()
        assert [r.kind for r in idx.roots()] == ["triton"]
    assert len(entries) == 9 and {(e.hits, e.misses, e.last_used) for e in entries} == {
        (0, 0, None)
    }


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "i.db"
    Index(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(IndexDbError, match="newer than this tcm"):
        Index(path)


def test_corrupt_db_file_is_a_clear_error(tmp_path):
    path = tmp_path / "i.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(IndexDbError, match="tcm index --rebuild"):
        Index(path)


def test_failed_write_leaves_the_previous_index(cache, tmp_path, monkeypatch):
    """A failure after the deletes and the entry upserts ran rolls all of them back."""
    settle(cache)
    with Index(tmp_path / "i.db") as idx:
        idx.update([Root(cache, "explicit")])
        before = {e.key: e.files for e in idx.entries()}
        shutil.rmtree(kernel_dirs(cache)[0])  # a delete the failed run would have made
        shutil.copytree(kernel_dirs(cache)[0], cache / ("Z" * 52))
        real = index_mod._scan_rows

        def bad_file_row(*a, **kw):
            parts = list(real(*a, **kw))
            parts[-1][-1][1].append(("only-two", "fields"))  # the files INSERT fails on this
            yield from parts

        monkeypatch.setattr(index_mod, "_scan_rows", bad_file_row)
        with pytest.raises(sqlite3.Error):
            idx.update([Root(cache, "explicit")])
        assert {e.key: e.files for e in idx.entries()} == before  # the transaction rolled back


def test_parallel_scan_gives_the_same_index(cache, tmp_path, monkeypatch):
    """The worker-process path (used for large caches) writes exactly what one process does."""
    settle(cache)
    with Index(tmp_path / "seq.db") as idx:
        idx.update([Root(cache, "explicit")])
        sequential = idx.entries(with_metadata=True)
    monkeypatch.setattr(index_mod, "PARALLEL_MIN", 2)
    monkeypatch.setattr(index_mod, "_CHUNK", 2)
    seen = []
    with Index(tmp_path / "par.db") as idx:
        stats = idx.update([Root(cache, "explicit")], progress=lambda d, t: seen.append((d, t)))
        parallel = idx.entries(with_metadata=True)
    assert stats.added == 9 and seen[-1] == (9, 9) and len(seen) == 5
    assert [(e.key, e.files, e.metadata, e.lookup) for e in parallel] == [
        (e.key, e.files, e.metadata, e.lookup) for e in sequential
    ]
