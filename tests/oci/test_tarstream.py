"""tcm's tar writer gives tarfile's PAX_FORMAT bytes, member for member."""

from __future__ import annotations

import io
import tarfile

import pytest

from tcmtasks.oci.tarstream import TarStream, header


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
    import os

    real = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: real(fd, n)[:10])
    with pytest.raises(OSError, match="shrank"):
        TarStream(io.BytesIO(), 0).add_file("f", str(p))
