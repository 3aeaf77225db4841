"""Staging dirs: where a restore writes before anything is published by rename, one per
destination root on that root's file system, and how a dead run's leftovers are told from a
live run's (a lock the kernel drops with the process, not a pid)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from .cache.lock import locked
from .safedirs import make_dirs

STAGING_PREFIX = ".tcm-staging-"


class Staging:
    """One staging dir per destination root, on that root's filesystem, made on first use
    (with the root's lock taken and leftovers of dead runs purged)."""

    def __init__(self, stack: contextlib.ExitStack, lock_timeout: float = 0.0):
        self.stack = stack
        self.lock_timeout = lock_timeout  # how long to wait for another run holding a root
        self.dirs: dict[Path, Path] = {}

    def dir_for(self, named: Path, rel: str = "") -> Path:
        """The staging dir of ``named/rel`` (every level below ``named`` checked: no link)."""
        root = Path(os.path.abspath(named / rel if rel else named))
        if root not in self.dirs:
            make_dirs(named, rel)
            self.stack.enter_context(locked(root, timeout=self.lock_timeout))
            purge_stale_staging(root)
            d = root / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
            d.mkdir()
            self.stack.enter_context(_alive_mark(d))
            self.dirs[root] = d
        return self.dirs[root]

    def cleanup(self) -> None:
        for d in self.dirs.values():
            shutil.rmtree(d, ignore_errors=True)


ALIVE_MARK = ".tcm-alive"


@contextlib.contextmanager
def _alive_mark(staging: Path) -> Iterator[None]:
    """Hold a lock on a file inside the staging dir while it is in use: the kernel drops it
    when the process dies however it dies, so the next run knows the dir is a leftover (a
    pid check alone fails in containers, where a dead run's pid is often 1, alive again)."""
    fd = os.open(staging / ALIVE_MARK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _in_use(staging: Path) -> bool:
    try:
        fd = os.open(staging / ALIVE_MARK, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        # made but not yet marked (a kill in between), or by an older tcm: judge by the pid
        m = re.match(rf"{re.escape(STAGING_PREFIX)}(\d+)-", staging.name)
        pid = int(m.group(1)) if m else 0
        return pid not in (0, 1) and _alive(pid)
    except OSError:
        return True  # not ours to judge: leave it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def purge_stale_staging(cache_dir: Path) -> int:
    """Remove staging dirs left by killed extractions (nobody holds their mark any more)."""
    removed = 0
    for d in Path(cache_dir).glob(f"{STAGING_PREFIX}*"):
        if d.is_symlink() or not d.is_dir():
            continue
        if not _in_use(d):
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True
