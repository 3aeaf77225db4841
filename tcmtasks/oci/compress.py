"""The layer's compressed stream: hashed before (diff_id) and after (digest) compression, and
compressed on every core while the same input always gives the same bytes.

* gzip: the tar stream is cut into fixed 1 MiB blocks, each deflated on its own (with the 32 KiB
  before it as the dictionary, so the ratio stays within ~0.5% of one stream) and ended with a
  sync flush, the way pigz does; the pieces are joined in order and closed by an empty final
  block, one CRC32 and the size. The cut points depend only on the input, so the bytes do not
  depend on the number of threads. One deflate stream ran at zlib's speed on one core, which
  made ``tcm package`` slower than ``tar -czf`` (tar and gzip run in two processes).
* zstd: zstd's own multi-threaded streaming mode; see ``_zstd``.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import struct
import threading
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from ..errors import MissingDependency, UsageError

#: What the tar stream hands on: bytes, or read-only views of them.
Buffer = bytes | memoryview
COMPRESSIONS = ("gzip", "zstd", "none")
BLOCK = 1 << 20  # raw bytes per deflate block; part of the format: changing it changes digests
_WINDOW = 32 * 1024


def threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def _deflate(data: Buffer, zdict: Buffer, level: int) -> bytes:
    z = (
        zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, 0, zdict)
        if zdict
        else zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, 0)
    )
    return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)


def _zstd(level: int) -> Any:
    try:
        import zstandard
    except ImportError:
        raise MissingDependency("zstandard (for --compression zstd)", "zstd") from None
    # zstd's multi-threaded streaming mode (workers >= 1, fed by compress() and ended by flush())
    # cuts the input into jobs whose size is set by the level alone, so its output is the same
    # for 1 or 64 workers (zstd issue #2327; tests/oci/test_compress.py checks 1, 2 and 4). It
    # differs from the single-threaded mode (workers = 0), which is why that mode is never used:
    # a digest must not depend on the machine that packed it.
    return zstandard.ZstdCompressor(level=level, threads=threads()).compressobj()


LEVELS = {"gzip": (0, 9), "zstd": (1, 22)}


def check_level(compression: str, level: int | None) -> None:
    """A usage error for a level the compressor would reject (zlib's own is "Invalid
    initialization option")."""
    if level is None:
        return
    if compression not in COMPRESSIONS:
        raise UsageError(f"unknown compression {compression!r}; use gzip, zstd or none")
    if compression not in LEVELS:
        raise UsageError(f"--level is for gzip and zstd; --compression {compression} has none")
    low, high = LEVELS[compression]
    if not low <= level <= high:
        raise UsageError(f"--level {level} is out of range for {compression}: use {low}-{high}")


class LayerSink(io.RawIOBase):
    """Where the layer's tar stream goes. Writes are cut into BLOCK-sized chunks for a worker
    thread that hashes, compresses (gzip: on a pool, zstd: in its own threads) and writes them,
    so reading the cache and compressing overlap as in ``tar -c | gzip``."""

    def __init__(self, out: BinaryIO, compression: str, level: int | None = None):
        if compression not in COMPRESSIONS:
            raise UsageError(f"unknown compression {compression!r}; use gzip, zstd or none")
        self.out = out
        self.compression = compression
        self.diff_sha = hashlib.sha256()
        self.sha = hashlib.sha256()
        self.size = 0
        self._buf = bytearray()
        self._queue: queue.Queue[Buffer | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._z: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[bytes]] = deque()
        self._tail: Buffer = b""
        self._crc = 0
        self._raw = 0
        check_level(compression, level)
        if compression == "gzip":
            self._level = 6 if level is None else level
            self._pool = ThreadPoolExecutor(threads(), thread_name_prefix="tcm-deflate")
            xfl = b"\002" if self._level == 9 else b"\004" if self._level == 1 else b"\000"
            self._emit(b"\037\213\010\000\000\000\000\000" + xfl + b"\377")  # mtime 0, OS unknown
        elif compression == "zstd":
            self._z = _zstd(3 if level is None else level)
        super().__init__()
        self._thread = threading.Thread(target=self._work, name="tcm-layer", daemon=True)
        self._thread.start()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self._error:
            raise self._error
        if not self._buf and len(data) == BLOCK and memoryview(data).readonly:
            self._queue.put(data)  # TarStream's pieces (immutable): queued as they are
            return BLOCK
        self._buf += data
        if len(self._buf) >= BLOCK:
            n = len(self._buf) - len(self._buf) % BLOCK
            view = memoryview(self._buf)
            for i in range(0, n, BLOCK):
                self._queue.put(bytes(view[i : i + BLOCK]))
            view.release()
            del self._buf[:n]
        return len(data)

    def _emit(self, data: Buffer) -> None:
        if data:
            self.sha.update(data)
            self.size += len(data)
            self.out.write(data)

    def _work(self) -> None:
        try:
            while (chunk := self._queue.get()) is not None:
                self.diff_sha.update(chunk)
                if self._pool is not None:
                    self._crc = zlib.crc32(chunk, self._crc)
                    self._raw += len(chunk)
                    job = self._pool.submit(_deflate, chunk, self._tail, self._level)
                    self._pending.append(job)
                    self._tail = chunk[-_WINDOW:]
                    while len(self._pending) > 2 * threads():
                        self._emit(self._pending.popleft().result())
                elif self._z is not None:
                    self._emit(self._z.compress(chunk))
                else:
                    self._emit(chunk)
        except BaseException as exc:  # surfaced to the writer
            self._error = exc
            while self._queue.get() is not None:
                pass

    def abort(self) -> None:
        """Stop the workers after a failure on the tar side; the output is incomplete."""
        if not self.closed:
            self._queue.put(None)
            self._thread.join()
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
            super().close()

    def close(self) -> None:
        if self.closed:
            return
        if self._buf:
            self._queue.put(bytes(self._buf))
            self._buf.clear()
        self._queue.put(None)
        self._thread.join()
        try:
            if self._error:
                raise self._error
            if self._pool is not None:
                while self._pending:
                    self._emit(self._pending.popleft().result())
                # an empty final block (fixed Huffman, BFINAL set), then CRC32 and size
                self._emit(b"\003\000" + struct.pack("<II", self._crc, self._raw & 0xFFFFFFFF))
            elif self._z is not None:
                self._emit(self._z.flush())
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
            super().close()
