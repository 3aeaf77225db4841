"""Directories below a root the user named, made and entered one level at a time and never
through a symbolic link.

A restore writes into trees that others may have touched first: Inductor's default dir is
``/tmp/torchinductor_$USER``, where any user can plant ``fxgraph -> /victim`` before the
node's first run. ``mkdir(parents=True)`` and ``rename`` follow such a link and write where
it points. Here each level below the root is created with ``mkdirat`` and opened with
``O_NOFOLLOW`` relative to the level above (``openat``), so a link at any level stops the
restore before anything is written through it. The root itself, and what leads to it, is
the user's choice and is followed as given.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePosixPath

from .errors import CacheError, os_error

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def check_dirs(root: Path, rel: str | PurePosixPath = "") -> None:
    """What ``make_dirs`` checks, making nothing: a caller checks every destination first and
    writes only when all pass."""
    make_dirs(root, rel, create=False)


def make_dirs(root: Path, rel: str | PurePosixPath = "", *, create: bool = True) -> Path:
    """``root/rel`` with every dir made as needed; CacheError when a level below ``root`` is
    a symbolic link or not a directory. Returns the path."""
    root = Path(os.path.abspath(root))
    try:
        if create:
            root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root, _DIR)
    except FileNotFoundError:
        if not create:
            return root  # nothing below it exists either: nothing to check
        raise
    except OSError as exc:
        raise os_error(exc, "make", root) from None
    here = root
    try:
        for part in PurePosixPath(rel).parts:
            if part in ("", ".", "..", "/"):
                raise CacheError(f"{root}/{rel} is not a path below {root}")
            here = here / part
            try:
                if create:
                    os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise os_error(exc, "make", here) from None
            try:
                below = os.open(part, _DIR | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if create:
                    raise
                break  # not there yet: it will be made, by us
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    what = "a symbolic link" if os.path.islink(here) else "not a directory"
                    raise CacheError(
                        f"{here} is {what}: tcm writes nothing through a link it did not "
                        f"make, and nothing was installed; remove it (or name the real dir) "
                        "and run this again"
                    ) from None
                raise os_error(exc, "open", here) from None
            os.close(fd)
            fd = below
    finally:
        os.close(fd)
    return here
