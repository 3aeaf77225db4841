"""Selection criteria and the parsers behind the CLI's filters."""

from __future__ import annotations

import pytest

from tcmtasks import Criteria, Target, UsageError, scan_root, select
from tcmtasks.selection import parse_age, parse_size
from tests.support.variants import age, edit_metadata, kernel_dirs


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("3d", 259200),
        ("1w", 604800),
        ("1d12h", 129600),
        ("1.5h", 5400),
    ],
)
def test_parse_age(text, seconds):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5y", "h", "-3d", "3d x"])
def test_parse_age_rejects(text):
    with pytest.raises(UsageError, match="s m h d w"):
        parse_age(text)


def test_parse_size():
    assert parse_size("512") == 512
    assert parse_size("10K") == 10240
    assert parse_size("1.5G") == int(1.5 * 1024**3)
    assert parse_size("200MiB") == 200 * 1024**2
    with pytest.raises(UsageError):
        parse_size("lots")


def test_targets_parse_aliases_and_round_trip():
    assert Target.parse("rocm:gfx942") == Target("hip", "gfx942", 64)
    assert Target.parse("cuda:sm_90") == Target("cuda", "90", 32)
    assert Target.parse("hip:gfx1100:32") == Target("hip", "gfx1100", 32)
    for t in ("cuda:90", "hip:gfx942", "hip:gfx1100:32"):
        assert str(Target.parse(t)) == t
    for bad in ("cuda", "cuda:", "tpu:v5", "cuda:gfx942", "hip:90", "cuda:90:x"):
        with pytest.raises(UsageError):
            Target.parse(bad)


def entries_of(cache):
    return list(scan_root(cache))


def keys(entries):
    return sorted(e.key for e in entries)


def test_filters_by_name_backend_arch(cache):
    es = entries_of(cache)
    assert len(select(es, Criteria(names=["add_kernel"]))) == 6
    assert len(select(es, Criteria(names=["soft*"]))) == 3
    assert len(select(es, Criteria(names=["add"]))) == 0  # exact unless a glob
    rocm = select(es, Criteria(backends=["rocm"]))
    assert len(rocm) == 3 and {e.target.backend for e in rocm} == {"hip"}
    assert keys(select(es, Criteria(archs=["sm_90"]))) == keys(select(es, Criteria(archs=["90"])))
    assert len(select(es, Criteria(archs=["90", "gfx942"]))) == 6
    assert len(select(es, Criteria(backends=["cuda"], names=["softmax_kernel"]))) == 2
    with pytest.raises(UsageError, match="unknown backend"):
        Criteria(backends=["tpu"])


def test_filters_by_triton_version(cache):
    dirs = kernel_dirs(cache)
    edit_metadata(dirs[0], lambda m: m.pop("triton_version"))
    edit_metadata(dirs[1], lambda m: m.update(triton_version="3.9.0"))
    es = entries_of(cache)
    assert len(select(es, Criteria(triton_versions=["3.6"]))) == 7
    assert len(select(es, Criteria(triton_versions=["3.6.0"]))) == 7
    assert len(select(es, Criteria(triton_versions=["3.6.1"]))) == 0
    assert keys(select(es, Criteria(triton_versions=["unknown"]))) == [dirs[0].name]
    assert keys(select(es, Criteria(triton_versions=["3.[89]*"]))) == [dirs[1].name]


def test_age_comes_from_files_not_the_dir(cache):
    dirs = kernel_dirs(cache)
    age(dirs[0], 3 * 86400)
    age(dirs[1], 3 * 86400)
    (dirs[1] / "touch.ttir").write_text("new")  # a fresh file makes the entry young again
    import os
    import time

    old = time.time() - 10 * 86400
    os.utime(dirs[2], (old, old))  # an old dir with young files stays young
    es = entries_of(cache)
    assert keys(select(es, Criteria(older_than=parse_age("2d")))) == [dirs[0].name]
    assert len(select(es, Criteria(younger_than=parse_age("1d")))) == 8


def test_sorting(cache):
    es = entries_of(cache)
    by_size = select(es, Criteria(), sort="size")
    assert [e.size for e in by_size] == sorted(e.size for e in es)
    assert [e.size for e in select(es, Criteria(), sort="-size")] == sorted(
        (e.size for e in es), reverse=True
    )
    with pytest.raises(UsageError, match="unknown sort key"):
        select(es, Criteria(), sort="colour")
