"""One tcm at a time per cache root: an advisory ``flock`` on ``<root>/.tcm.lock``.

Triton itself never takes this lock (it writes through tmp dirs and renames, safe by itself);
the lock only serialises tcm runs that change a cache, so two prunes never judge the same
entries at once. The kernel drops a ``flock`` when its process dies, so a crashed run leaves
no stale lock behind.

Every function that changes a cache takes the lock itself (``prune.apply``, ``health.repair``,
``extract``...), and the operations above them take it for their whole plan-and-apply; so
the lock is re-entrant within a process: a nested ``locked()`` on a root this process holds
costs nothing. (Two ``flock``s on separate descriptors of one file would block each other.)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import CacheLocked, os_error

LOCK_NAME = ".tcm.lock"
log = logging.getLogger(__name__)

_held: dict[str, tuple[int, int]] = {}  # realpath of root -> (pid, depth)
_guard = threading.RLock()


@contextlib.contextmanager
def locked(root: Path, *, timeout: float = 0.0) -> Iterator[None]:
    """Hold the root's lock for the block; raise CacheLocked if another tcm holds it."""
    real = os.path.realpath(root)
    with _guard:
        pid, depth = _held.get(real, (0, 0))
        if pid == os.getpid():
            _held[real] = (pid, depth + 1)
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield
        finally:
            with _guard:
                pid, depth = _held[real]
                _held[real] = (pid, depth - 1)
        return
    fd = _open_lock_file(Path(root))
    try:
        _flock(fd, root, timeout)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        with _guard:
            _held[real] = (os.getpid(), 1)
        try:
            yield
        finally:
            with _guard:
                _held.pop(real, None)
    finally:
        os.close(fd)  # closing drops the flock


@contextlib.contextmanager
def locked_all(roots: Iterable[Path], *, timeout: float = 0.0) -> Iterator[None]:
    """Hold the locks of several roots (in a fixed order, so two runs cannot deadlock)."""
    with contextlib.ExitStack() as stack:
        for r in sorted({os.path.realpath(r) for r in roots}):
            stack.enter_context(locked(Path(r), timeout=timeout))
        yield


def _open_lock_file(root: Path) -> int:
    """Open (creating) the lock file without following a symlink planted in its place: the
    lock write would otherwise truncate whatever file the link points at."""
    path = root / LOCK_NAME
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the lock file is a symlink
            raise CacheLocked(
                f"{path} is a symbolic link, not tcm's lock file; remove it and run this again"
            ) from None
        raise os_error(exc, "lock", root) from None


def _flock(fd: int, root: Path, timeout: float) -> None:
    """Take the lock, waiting up to ``timeout`` seconds for the run that holds it (saying
    once whom it waits for: pods sharing a node's cache start together)."""
    start = time.monotonic()
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if waited:
                log.warning("%s: took the lock after %.1f s", root, time.monotonic() - start)
            return
        except BlockingIOError:
            holder = None
            if not waited and timeout > 0:
                holder = _holder(fd)
                who = f"another tcm (pid {holder})" if holder else "another tcm"
                log.warning(
                    "waiting for %s, which is changing %s (at most %g s: --lock-timeout)",
                    who, root, timeout,
                )  # fmt: skip
                waited = True
            if time.monotonic() - start >= timeout:
                holder = holder or _holder(fd)
                who = f"another tcm (pid {holder})" if holder else "another tcm"
                after = f" after waiting {timeout:g} s (--lock-timeout)" if timeout > 0 else ""
                raise CacheLocked(
                    f"{who} is changing {root}{after}; wait for it to finish and run this again"
                ) from None
            time.sleep(0.05)


def _holder(fd: int) -> str | None:
    """The pid holding the lock: the kernel's word (``/proc/locks`` lists each ``flock`` with
    its owner and the file's device:inode), else the pid the holder wrote, if it has yet (it
    writes right after taking the lock, so a run that has just started has not)."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                fields = line.split()
                if "FLOCK" in fields and inode in fields and not line.lstrip().startswith("->"):
                    pid = fields[fields.index(inode) - 1]
                    if pid.isdigit():
                        return pid
    except OSError:
        pass
    written = os.pread(fd, 64, 0).decode(errors="replace").strip()
    return written if written.isdigit() else None
