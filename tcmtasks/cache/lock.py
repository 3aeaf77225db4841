"""One tcm at a time per cache root: an advisory ``flock`` on ``<root>/.tcm.lock``.

Triton itself never takes this lock (it writes through tmp dirs and renames, safe by itself);
the lock only serialises tcm runs that change a cache, so two prunes never judge the same
entries at once. The kernel drops a ``flock`` when its process dies, so a crashed run leaves
no stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import CacheError

LOCK_NAME = ".tcm.lock"


@contextlib.contextmanager
def locked(root: Path, *, timeout: float = 0.0) -> Iterator[None]:
    """Hold the root's lock for the block; raise CacheError if another tcm holds it."""
    path = Path(root) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CacheError(f"cannot lock {root}: {exc.strerror or exc}; is it writable?") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    raise CacheError(
                        f"another tcm (pid {holder}) is changing {root}; wait for it to finish "
                        "and run this again"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the flock
