"""tcm's tar writer gives tarfile's PAX_FORMAT bytes, member for member."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from tcmtasks.oci.tarstream import CHUNK, TarStream, header


def _tarfile_header(name, size, mtime, mode, kind):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.type = size, mtime, mode, kind
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@pytest.mark.parametrize(
    "name,size,mtime,mode,kind",
    [
        ("io.triton.cache/", 0, 0, 0o755, tarfile.DIRTYPE),
        ("io.triton.cache/KEY/add_kernel.json", 1234, 0, 0o644, tarfile.REGTYPE),
        ("a" * 100, 7, 1700000000, 0o644, tarfile.REGTYPE),  # exactly fits
        ("a" * 101, 7, 0, 0o644, tarfile.REGTYPE),  # pax record for the name
        ("io.inductor.cache/fxgraph/ü/x", 1, 0, 0o644, tarfile.REGTYPE),  # not ASCII: pax
        ("io.inductor.cache/x.so", 9 * 2**30, 0, 0o755, tarfile.REGTYPE),  # over 8 GiB: pax
        ("", 0, 0, 0o644, tarfile.REGTYPE),
    ],
)
def test_header_is_tarfiles(name, size, mtime, mode, kind):
    assert header(name, size, mtime, mode, kind) == _tarfile_header(name, size, mtime, mode, kind)


def test_stream_is_tarfiles_stream(tmp_path):
    files = {f"f{i}.bin": bytes([i]) * (i * 700) for i in range(6)}
    for n, data in files.items():
        (tmp_path / n).write_bytes(data)
    ours = io.BytesIO()
    tar = TarStream(ours, 0)
    tar.add_dir("d/")
    tar.add_bytes("d/m.json", b"{}")
    for n in files:
        tar.add_file(f"d/{n}", str(tmp_path / n))
    tar.close()
    theirs = io.BytesIO()
    with tarfile.open(fileobj=theirs, mode="w|", format=tarfile.PAX_FORMAT) as t:
        t.addfile(_info("d/", 0, tarfile.DIRTYPE, 0o755))
        t.addfile(_info("d/m.json", 2), io.BytesIO(b"{}"))
        for n, data in files.items():
            t.addfile(_info(f"d/{n}", len(data)), io.BytesIO(data))
    assert ours.getvalue() == theirs.getvalue()


def _info(name, size, kind=tarfile.REGTYPE, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.type = size, 0, mode, kind
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def test_a_file_that_shrinks_is_an_error(tmp_path, monkeypatch):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 100)
    real = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: real(fd, n)[:10])
    with pytest.raises(OSError, match="shrank"):
        TarStream(io.BytesIO(), 0).add_file("f", str(p))


class _Writes(io.BytesIO):
    """Records the length of every write (the compressor's input cut)."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def write(self, data):
        self.sizes.append(len(data))
        return super().write(data)


def test_stream_goes_out_in_whole_chunks_across_members(tmp_path):
    """Big and small members alike: every write is CHUNK bytes but the last, and the stream is
    still tarfile's byte for byte (a cut in the middle of a member changes nothing)."""
    files = {"big": os.urandom(CHUNK + 4321), "huge": os.urandom(3 * CHUNK), "small": b"s" * 700}
    for n, data in files.items():
        (tmp_path / n).write_bytes(data)
    ours = _Writes()
    tar = TarStream(ours, 0)
    for i in range(300):
        tar.add_bytes(f"d/m{i}", bytes([i % 256]) * (i * 37))
    for n in files:
        tar.add_file(f"d/{n}", str(tmp_path / n))
    tar.close()
    assert len(ours.sizes) > 4 and set(ours.sizes[:-1]) == {CHUNK} and ours.sizes[-1] <= CHUNK
    theirs = io.BytesIO()
    with tarfile.open(fileobj=theirs, mode="w|", format=tarfile.PAX_FORMAT) as t:
        for i in range(300):
            t.addfile(_info(f"d/m{i}", i * 37), io.BytesIO(bytes([i % 256]) * (i * 37)))
        for n, data in files.items():
            t.addfile(_info(f"d/{n}", len(data)), io.BytesIO(data))
    assert ours.getvalue() == theirs.getvalue()


@pytest.mark.parametrize("indexed", [0, 99, 100, 101, 5000])
def test_a_stale_indexed_size_still_gives_the_files_bytes(tmp_path, indexed):
    """The size hint (what the index says) only spares an fstat: a file that grew or shrank
    since it was indexed goes in as it is now, opened relative to its dir."""
    (tmp_path / "f").write_bytes(b"x" * 100)
    ours = io.BytesIO()
    tar = TarStream(ours, 0)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        tar.add_file("f", "f", dir_fd=dir_fd, size=indexed)
    finally:
        os.close(dir_fd)
    tar.close()
    with tarfile.open(fileobj=io.BytesIO(ours.getvalue())) as t:
        member = t.getmember("f")
        assert member.size == 100 and t.extractfile(member).read() == b"x" * 100
