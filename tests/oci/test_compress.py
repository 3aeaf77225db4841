"""The layer's compression: valid streams whose bytes depend on the input alone."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import subprocess

import pytest

from tcmtasks.errors import UsageError
from tcmtasks.oci import compress
from tcmtasks.oci.compress import BLOCK, LayerSink


def _payload(n: int) -> bytes:
    """Compressible but not trivial: words drawn from a fixed random vocabulary."""
    rnd = random.Random(7)
    words = [rnd.randbytes(rnd.randint(3, 30)) for _ in range(3000)]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words)
    return bytes(out[:n])


def _sink(data: bytes, compression: str, write_size: int) -> tuple[bytes, LayerSink]:
    out = io.BytesIO()
    sink = LayerSink(out, compression)
    for i in range(0, len(data), write_size):
        sink.write(data[i : i + write_size])
    sink.close()
    return out.getvalue(), sink


DATA = _payload(5 * BLOCK + 12345)  # several blocks and a short last one


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_bytes_depend_on_the_input_only(compression, monkeypatch):
    """Not on the thread count (1, 2, 4 workers) nor on how the tar side cut its writes."""
    seen = set()
    for workers, write_size in ((1, BLOCK), (2, 4096), (4, 3 * BLOCK + 1), (4, 511)):
        monkeypatch.setattr(compress, "threads", lambda w=workers: w)
        blob, sink = _sink(DATA, compression, write_size)
        assert sink.sha.hexdigest() == hashlib.sha256(blob).hexdigest()
        assert sink.diff_sha.hexdigest() == hashlib.sha256(DATA).hexdigest()
        assert sink.size == len(blob)
        seen.add(blob)
    assert len(seen) == 1


def test_gzip_is_read_by_python_and_gzip(tmp_path):
    blob, _ = _sink(DATA, "gzip", 65536)
    assert gzip.decompress(blob) == DATA
    path = tmp_path / "layer.gz"
    path.write_bytes(blob)
    out = subprocess.run(["gzip", "-dc", str(path)], capture_output=True, check=True).stdout
    assert out == DATA
    assert len(blob) < len(DATA) * 3 // 4  # really compressed
    one_stream = gzip.compress(DATA, mtime=0)
    assert len(blob) < len(one_stream) * 1.01


@pytest.mark.parametrize("n", [0, 1, BLOCK, BLOCK + 1])
def test_gzip_edges(n):
    data = os.urandom(n)
    blob, _ = _sink(data, "gzip", 1 << 16)
    assert gzip.decompress(blob) == data


def test_zstd_is_read_by_zstd(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    blob, _ = _sink(DATA, "zstd", 65536)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(blob) == DATA


def test_unknown_compression():
    with pytest.raises(UsageError, match="gzip, zstd or none"):
        LayerSink(io.BytesIO(), "lz4")


def test_a_failing_writer_surfaces_its_error():
    class Full(io.BytesIO):
        def write(self, data):  # type: ignore[override]
            raise OSError(28, "No space left on device")

    sink = LayerSink(Full(), "none")
    with pytest.raises(OSError, match="No space"):
        for _ in range(20):
            sink.write(bytes(BLOCK))
        sink.close()


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_a_reused_buffer_is_copied_and_whole_views_are_not(compression):
    """Whole read-only pieces (the tar stream's) are queued as they are; a mutable buffer the
    caller refills at once must not change what was already written."""
    if compression == "zstd":
        pytest.importorskip("zstandard")
    expected, _ = _sink(DATA, compression, BLOCK)
    out = io.BytesIO()
    sink = LayerSink(out, compression)
    buf = bytearray(BLOCK)
    for i in range(0, len(DATA), BLOCK):
        piece = DATA[i : i + BLOCK]
        buf[: len(piece)] = piece
        sink.write(buf if len(piece) == BLOCK else piece)
        buf[:] = bytes(BLOCK)  # the caller reuses its buffer
    sink.close()
    assert out.getvalue() == expected
    out = io.BytesIO()
    sink = LayerSink(out, compression)
    view = memoryview(DATA)
    for i in range(0, len(DATA), BLOCK):
        sink.write(view[i : i + BLOCK])
    sink.close()
    assert out.getvalue() == expected


def test_the_tar_streams_pieces_are_the_compressors_blocks():
    from tcmtasks.oci.tarstream import CHUNK

    assert CHUNK == BLOCK
