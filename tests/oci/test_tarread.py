"""The layer reader (tcmtasks/oci/tarread.py) against tarfile's own archives, and the
malformed ones it must refuse."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import time

import pytest

from tcmtasks.errors import CorruptTar, DigestMismatch, OversizeHeader
from tcmtasks.oci.layout import VerifyingReader
from tcmtasks.oci.tarread import CHUNK, Chunks, TarReader

FILES = {
    "io.triton.cache/KEY12345/a.cubin": b"\x7fELF" + bytes(range(256)) * 9,
    "io.triton.cache/KEY12345/" + "n" * 140 + ".json": b'{"name": "long"}',  # > 100 bytes
    "inductor/fxgraph/ab/" + "d" * 90 + "/" + "e" * 80: b"x" * (CHUNK + 17),  # ustar prefix
    "empty": b"",
}


def archive(fmt: int, files: dict[str, bytes] = FILES, **extra: tarfile.TarInfo) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        d = tarfile.TarInfo("io.triton.cache")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
        for ti in extra.values():
            tar.addfile(ti)
    return out.getvalue()


def members(data: bytes) -> list[tuple[str, bytes, bool]]:
    chunks = Chunks(io.BytesIO(data), io.BytesIO(b""))
    try:
        tar = TarReader(chunks)
        out = []
        for m in tar:
            if m.isfile():
                out.append((m.name, b"".join(bytes(v) for v in tar.content(m)), True))
            else:
                tar.skip(m)
                out.append((m.name.rstrip("/"), b"", False))  # (tarfile strips it too)
        assert sum(tar.rest()) >= 0 and tar.ended
        return out
    finally:
        chunks.close()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_reads_what_tarfile_writes_in_each_format(fmt: int) -> None:
    files = FILES if fmt != tarfile.USTAR_FORMAT else {
        k: v for k, v in FILES.items() if len(k.rsplit("/", 1)[-1]) <= 100
    }  # fmt: skip
    got = members(archive(fmt, files))
    with tarfile.open(fileobj=io.BytesIO(archive(fmt, files))) as tar:
        want = [(m.name, tar.extractfile(m).read() if m.isfile() else b"", m.isfile())
                for m in tar]  # fmt: skip
    assert got == want and len(got) == len(files) + 1


def test_links_and_devices_are_reported_as_such() -> None:
    link = tarfile.TarInfo("io.triton.cache/KEY12345/l")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("io.triton.cache/KEY12345/h")
    hard.type, hard.linkname = tarfile.LNKTYPE, "empty"
    dev = tarfile.TarInfo("io.triton.cache/KEY12345/d")
    dev.type = tarfile.CHRTYPE
    data = archive(tarfile.PAX_FORMAT, {}, link=link, hard=hard, dev=dev)
    chunks = Chunks(io.BytesIO(data), io.BytesIO(b""))
    kinds = [(m.issym(), m.islnk(), m.isdev(), m.isfile()) for m in TarReader(chunks)]
    chunks.close()
    assert kinds[1:] == [(True, False, False, False), (False, True, False, False),
                         (False, False, True, False)]  # fmt: skip


def test_a_bad_checksum_is_corruption() -> None:
    data = bytearray(archive(tarfile.PAX_FORMAT))
    data[600] ^= 0x01  # inside the second header's name
    with pytest.raises(CorruptTar, match="checksum"):
        members(bytes(data))


def test_a_member_cut_short_is_corruption() -> None:
    data = archive(tarfile.GNU_FORMAT)
    with pytest.raises(CorruptTar, match="unexpected end"):
        members(data[: len(data) // 2])


def test_a_huge_pax_header_is_refused_unread() -> None:
    big = {"comment": "x" * (2 << 20)}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        ti = tarfile.TarInfo("a")
        ti.pax_headers = big
        tar.addfile(ti, io.BytesIO(b""))
    with pytest.raises(OversizeHeader):
        members(out.getvalue())


def test_a_global_header_that_renames_members_is_refused() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"path": "../escape"}) as tar:  # fmt: skip
        tar.addfile(tarfile.TarInfo("a"), io.BytesIO(b""))
    with pytest.raises(CorruptTar, match="global"):
        members(out.getvalue())


def test_a_sparse_file_is_not_a_regular_file() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        ti = tarfile.TarInfo("io.triton.cache/KEY12345/s")
        ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
        tar.addfile(ti, io.BytesIO(b""))
    assert [f for _n, _d, f in members(out.getvalue())] == [False]


def test_the_readers_digest_error_is_raised_to_the_consumer() -> None:
    """The reading thread's error is raised in the consumer's thread, as the reader's own
    exception, after the data decompressed before it (the blob's end can come before the
    last chunk is handed over: whatever was staged is then void)."""
    blob = gzip.compress(archive(tarfile.PAX_FORMAT))
    wrong = "sha256:" + hashlib.sha256(b"other").hexdigest()
    raw = VerifyingReader(io.BytesIO(blob), wrong, len(blob), "test blob")
    chunks = Chunks(gzip.GzipFile(fileobj=raw, mode="rb"), raw)
    tar = TarReader(chunks)
    names = []
    with pytest.raises(DigestMismatch):
        for m in tar:
            names.append(m.name)
            tar.skip(m)
        list(tar.rest())
    chunks.close()
    assert names and len(names) <= len(FILES) + 1


def test_closing_early_stops_the_reader_and_bounds_memory() -> None:
    """A consumer that stops (a refused member) leaves the thread blocked on a full queue of
    at most DEPTH chunks; close() ends it at once."""

    class Endless(io.RawIOBase):
        reads = 0

        def readinto(self, b):  # type: ignore[no-untyped-def]
            Endless.reads += 1
            b[:] = bytes(len(b))
            return len(b)

    chunks = Chunks(Endless(), io.BytesIO(b""))
    assert chunks.next() is not None
    time.sleep(0.3)
    seen = Endless.reads
    assert seen < 64  # bounded: the queue holds 8 chunks, each a few reads
    t = time.perf_counter()
    chunks.close()
    assert time.perf_counter() - t < 2 and not chunks._thread.is_alive()


def test_span_is_the_members_record_as_the_layer_holds_it() -> None:
    """A plain member (0644, its header alone, within one chunk) comes whole, byte for byte;
    one a copy would change (a PAX name, another mode, across chunks) does not, and is
    then read as usual."""
    setuid = tarfile.TarInfo("io.triton.cache/KEY12345/s.so")
    setuid.mode, setuid.size = 0o4755, 3
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in FILES.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        t.addfile(setuid, io.BytesIO(b"abc"))
    data = out.getvalue()
    chunks = Chunks(io.BytesIO(data), io.BytesIO(b""))
    got = {}
    try:
        tar = TarReader(chunks)
        for m in tar:
            record = tar.span(m)
            got[m.name] = None if record is None else bytes(record)
            if record is None:
                tar.skip(m)
    finally:
        chunks.close()
    cubin = "io.triton.cache/KEY12345/a.cubin"
    start = data.index(cubin.encode())  # its header's first byte
    size = len(FILES[cubin])
    assert got[cubin] == data[start : start + 512 + size + (-size % 512)]
    assert got["empty"] is not None and len(got["empty"]) == 512
    long_json = next(n for n in FILES if n.endswith(".json"))
    assert got[long_json] is None  # its name is in a PAX block before the header
    assert got["inductor/fxgraph/ab/" + "d" * 90 + "/" + "e" * 80] is None  # over a chunk
    assert got["io.triton.cache/KEY12345/s.so"] is None  # set-uid: not copied as is


def _header_with(size_field: bytes, checksum_format: str) -> bytes:
    ti = tarfile.TarInfo("io.triton.cache/KEY12345/a.json")
    ti.size = 5
    block = bytearray(ti.tobuf(tarfile.USTAR_FORMAT))
    block[124:136] = size_field
    block[148:156] = b" " * 8
    block[148:156] = (checksum_format % sum(block)).encode()
    return bytes(block) + b"hello" + bytes(507) + bytes(1024)


@pytest.mark.parametrize(
    ("size_field", "checksum_format"),
    [
        (b"%011o\0" % 5, "%06o\0 "),  # tarfile, GNU tar
        (b"%011o " % 5, "%06o\0 "),  # space-ended size
        (b"%011o\0" % 5, "%07o\0"),  # a seven-digit checksum
        (b"%011o\0" % 5, "%6o\0 "),  # old tars: digits after spaces
        (b"      %05o\0" % 5, "%06o \0"),
        (b"\x80" + (5).to_bytes(11, "big"), "%06o\0 "),  # GNU base-256
    ],
)
def test_every_way_of_writing_a_number_reads_the_same(size_field, checksum_format) -> None:
    data = _header_with(size_field, checksum_format)
    assert members(data) == [("io.triton.cache/KEY12345/a.json", b"hello", True)]


def test_a_checksum_with_a_digit_after_its_end_is_corrupt() -> None:
    data = bytearray(_header_with(b"%011o\0" % 5, "%06o \0"))
    data[155] = ord("7")  # "NNNNNN 7": not a number
    with pytest.raises(CorruptTar):
        members(bytes(data))
