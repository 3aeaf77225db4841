"""The two writers of a layer's files (GNU tar in a second process, and this process's own
open/write/close) make the same files, refuse the same things, and fail the same way."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tcmtasks import stagewrite
from tcmtasks.errors import DiskFull, HostileImage
from tcmtasks.extract import extract
from tcmtasks.stagewrite import DirectWriter, TarWriter, Writer, gnu_tar, open_writer
from tcmtasks.targets import Target
from tests.test_extract import HOST, hostile_image, member, snapshot
from tests.test_extract import image as image  # (the fixture, used by name)

KEY = "B" * 52


def writers() -> list[str]:
    return ["tar", "direct"]


def make(kind: str) -> Writer:
    if kind == "tar":
        tar = gnu_tar()
        assert tar is not None, "GNU tar is on every machine tcm is tested on (.ci/run)"
        return TarWriter(tar)
    return DirectWriter()


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (
            p.stat().st_mode & 0o7777,
            p.read_bytes() if p.is_file() else b"",
        )
        for p in sorted(root.rglob("*"))
    }


def files() -> list[tuple[str, list[bytes | memoryview], int]]:
    big = random.Random(1).randbytes(3 << 20)  # in pieces, as TarReader.content hands them
    view = memoryview(big)
    return [
        (f"{KEY}/add_kernel.json", [b'{"name": "add_kernel"}'], 22),
        (
            f"{KEY}/add_kernel.cubin",
            [view[: 1 << 20], view[1 << 20 : 2 << 20], view[2 << 20 :]],
            len(big),
        ),
        (f"{KEY}/empty.ptx", [], 0),
        ("io.inductor.cache/fxgraph/ab/fabcdef/entry", [b"x" * 513], 513),  # a part, deeper
    ]


@pytest.mark.parametrize("kind", writers())
def test_both_writers_make_the_same_files(tmp_path: Path, kind: str) -> None:
    made: dict[str, dict[str, tuple[int, bytes]]] = {}
    for k in writers():
        root = tmp_path / k
        root.mkdir()
        w = make(k)
        for rel, pieces, size in files():
            w.write((str(root), rel), pieces, size)
        w.close()
        made[k] = tree(root)
    assert made["tar"] == made["direct"]
    mode = 0o644 & ~_umask()
    assert made[kind][f"{KEY}/add_kernel.json"] == (mode, b'{"name": "add_kernel"}')
    assert len(made[kind][f"{KEY}/add_kernel.cubin"][1]) == 3 << 20
    assert made[kind][f"{KEY}/empty.ptx"] == (mode, b"")


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


@pytest.mark.parametrize("kind", writers())
@pytest.mark.parametrize(
    ("names", "message"),
    [
        ([f"{KEY}/a.json", f"{KEY}/a.json"], "twice"),
        (["io.vllm/x", "io.vllm/x/y"], "as a file and as a dir"),
        (["io.vllm/x/y", "io.vllm/x"], "as a file and as a dir"),
    ],
)
def test_a_name_twice_or_a_file_as_a_dir_is_refused(
    tmp_path: Path, kind: str, names: list[str], message: str
) -> None:
    w = make(kind)
    with pytest.raises(HostileImage, match=message):
        for rel in names:
            w.write((str(tmp_path), rel), [b"data"], 4)
        w.close()
    w.abort()


@pytest.mark.parametrize("kind", writers())
def test_a_full_disk_is_disk_full_with_either_writer(tiny_fs: Path, kind: str) -> None:
    w = make(kind)
    data = os.urandom(1 << 20)  # the tmpfs holds 512 KiB
    with pytest.raises(DiskFull, match="disk is full") as err:
        w.write((str(tiny_fs), f"{KEY}/big.cubin"), [data], len(data))
        w.close()
    w.abort()
    assert str(tiny_fs) in str(err.value)


def test_abort_stops_tar_at_once(tmp_path: Path) -> None:
    w = make("tar")
    assert isinstance(w, TarWriter)
    w.write((str(tmp_path), f"{KEY}/a.json"), [b"{}"], 2)
    procs = [c.proc for c in w._children.values()]
    w.abort()
    assert procs and all(p.returncode is not None for p in procs)  # reaped: nothing runs on


def test_the_block_that_raises_leaves_no_tar_running(tmp_path: Path) -> None:
    seen = []
    with pytest.raises(KeyboardInterrupt), open_writer() as w:
        w.write((str(tmp_path), f"{KEY}/a.json"), [b"{}"], 2)
        seen = [c.proc for c in getattr(w, "_children", {}).values()]
        raise KeyboardInterrupt
    assert all(p.returncode is not None for p in seen)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (
            [member(f"io.triton.cache/{KEY}/k.json"), member(f"io.triton.cache/{KEY}/k.json")],
            "twice",
        ),
        ([member(f"io.triton.cache/{KEY}/dev", kind=b"3")], "a device"),
    ],
)
def test_extract_without_gnu_tar_refuses_the_same(image, tmp_path, monkeypatch, members, message):
    """A node without GNU tar (busybox) extracts with the direct writer, as safely."""
    monkeypatch.setattr(stagewrite, "gnu_tar", lambda: None)
    _, good = image
    dest = tmp_path / "c"
    report = extract(good, dest, targets=[Target.parse("cuda:90")], host=HOST)
    assert report.kept
    before = snapshot(dest)
    with pytest.raises(HostileImage, match=message):
        extract(hostile_image(tmp_path, members), dest, targets=None, host=HOST)
    assert snapshot(dest) == before and not list(dest.glob(".tcm-staging-*"))


def test_a_copied_member_lands_as_a_written_one(tmp_path: Path) -> None:
    """GNU tar's writer takes a layer's Triton member as the layer holds it (its own header,
    io.triton.cache/ stripped by tar): the same file, mode and bytes as ``write`` makes."""
    import io
    import tarfile

    big = random.Random(2).randbytes(70_000)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in (
            (f"io.triton.cache/{KEY}/k.cubin", big),
            (f"io.triton.cache/{KEY}/k.json", b"{}"),
        ):
            ti = tarfile.TarInfo(name)
            ti.size, ti.uid, ti.mtime = len(data), 4242, 1  # neither is kept
            t.addfile(ti, io.BytesIO(data))
    raw = memoryview(out.getvalue())
    size = 512 + len(big) + (-len(big) % 512)
    copied, written = tmp_path / "copied", tmp_path / "written"
    copied.mkdir()
    written.mkdir()
    w = make("tar")
    w.copy(str(copied), raw[:size])
    w.copy(str(copied), raw[size : size + 1024])
    w.close()
    w = make("tar")
    w.write((str(written), f"{KEY}/k.cubin"), [big], len(big))
    w.write((str(written), f"{KEY}/k.json"), [b"{}"], 2)
    w.close()
    assert tree(copied) == tree(written)
    assert tree(copied)[f"{KEY}/k.cubin"] == (0o644 & ~_umask(), big)
    assert (copied / KEY / "k.json").stat().st_uid == os.getuid()
    assert (copied / KEY / "k.json").stat().st_mtime > 1
