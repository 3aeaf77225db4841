"""Writing a layer's accepted files into a staging dir: by GNU tar in a second process where
the node has it, else by this one.

Why a second process: creating ~16,000 small files costs one open, write and close each, and
from Python each call also costs its interpreter overhead on the thread that parses the layer;
with the parsing, that thread was most of an extract (2.2x ``tar -xzf && sync -f`` on a fresh
ext4, bench/RESULTS.md). A writer *thread* made it slower (its many short calls convoy on the
GIL with the parser), a second process does not: GNU tar's C loop creates the files on the
other core while this one parses and judges. What tar receives is a tar stream tcm writes
itself (``oci/tarstream.py``): only members already judged safe (a regular file, a checked
relative name, within the caps). A Triton file goes as the layer holds it (``copy``: its
header and content as one view, no new header, no copy of its bytes; tar's ``--transform``
drops the ``io.triton.cache/`` before its ``KEY/FILE``) when that header says nothing tcm
would not (mode 0644, no PAX or long-name block before it: oci/tarread.py ``span``); every
other member goes under a fresh header (mode 0644). Owners and times are never kept
(``--no-same-owner``, ``-m``). tar's ``-k`` refuses to replace a file, and each name is also
checked here, so an image naming one file twice is refused as before.

Errors: tar's own message (its stderr, in the C locale) becomes the error tcm raises: a full
disk and a denied write say so, as the direct writer's ``OSError`` does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import IO, Protocol

from .errors import HostileImage, ToolFailed, os_error
from .oci.tarstream import TarStream

#: (a staging dir, the path of a file below it)
Where = tuple[str, str]
#: What tar strips from the name of a member copied as the layer holds it (``copy``): the
#: layer's Triton prefix, ``io.triton.cache/`` (a regex, for tar's --transform); no name
#: ``write`` hands tar starts with it (a key has no dots)
COPIED = r"io\.triton\.cache/"
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_F_SETPIPE_SZ = 1031  # Linux fcntl: a bigger pipe, fewer switches between the two processes


class Writer(Protocol):
    #: whether ``copy`` works (GNU tar's writer; not this process's)
    copies: bool

    def write(self, where: Where, content: Iterable[memoryview | bytes], size: int) -> None: ...

    def copy(self, root: str, record: memoryview) -> None:
        """A layer's ``io.triton.cache/KEY/FILE`` member, header and all, as ``KEY/FILE``
        below ``root`` (the caller has checked its name, kind, size and mode)."""

    def close(self) -> None:
        """Every file is written (raises the writer's error otherwise)."""

    def abort(self) -> None:
        """Stop now: what was written is left to the staging dir's cleanup."""


@contextlib.contextmanager
def open_writer() -> Iterator[Writer]:
    """GNU tar's where the node has it, else this process's: closed (every file on disk,
    its errors raised) when the block ends, stopped at once if the block raises."""
    tar = gnu_tar()
    writer: Writer = TarWriter(tar) if tar else DirectWriter()
    try:
        yield writer
    except BaseException:
        writer.abort()
        raise
    writer.close()


@functools.lru_cache(maxsize=1)
def gnu_tar() -> str | None:
    """GNU tar's path, or None (busybox's and bsdtar lack the options used here)."""
    tar = shutil.which("tar")
    if tar is None:
        return None
    try:
        out = subprocess.run(
            [tar, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return tar if "GNU tar" in out else None


class DirectWriter:
    """Each file opened and written from this process (``O_EXCL``: a name twice is an error)."""

    copies = False

    def __init__(self, made: set[str] | None = None) -> None:
        self._made = made or set()  # dirs made (a mkdir per file was half the syscalls)

    def write(self, where: Where, content: Iterable[memoryview | bytes], size: int) -> None:
        path = f"{where[0]}/{where[1]}"
        parent = os.path.dirname(path)
        try:
            if parent not in self._made:
                os.makedirs(parent, exist_ok=True)
                self._made.add(parent)
            fd = os.open(path, _WRITE_FLAGS, 0o644)
            try:
                for piece in content:  # a read error here is the layer's: raised as is
                    view = memoryview(piece)
                    try:
                        while view:
                            view = view[os.write(fd, view) :]
                    except OSError as exc:
                        raise os_error(exc, "write", where[0]) from None
            finally:
                os.close(fd)
        except FileExistsError:
            if os.path.isdir(path) or not os.path.isdir(parent):  # x, then x/y (or x/y, x)
                raise HostileImage(
                    f"the layer holds {os.path.basename(path if os.path.isdir(path) else parent)}"
                    " as a file and as a dir"
                ) from None
            raise HostileImage(f"layer holds {where[1]} twice") from None
        except (IsADirectoryError, NotADirectoryError):
            name = os.path.basename(path)
            raise HostileImage(f"the layer holds {name} as a file and as a dir") from None
        except PermissionError as exc:
            raise os_error(exc, "write", parent) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise os_error(exc, "write", where[0]) from None
            raise

    def copy(self, root: str, record: memoryview) -> None:
        raise NotImplementedError("the direct writer takes each file's content (write)")

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _Pipe:
    def __init__(self, fd: int):
        self.fd = fd

    def write(self, data: bytes | memoryview, /) -> None:
        view = memoryview(data)
        while view:  # BrokenPipeError: tar has died, and its exit status says why
            view = view[os.write(self.fd, view) :]


class _Child:
    """One ``tar -x`` writing below one staging dir."""

    def __init__(self, tar: str, root: str):
        self.root = root
        # a file, not a pipe: tar never blocks on it; closed by kill()
        self.errors: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [tar, "-x", "-f", "-", "-C", root, "-k", "-m", "--no-same-owner",
             "--no-same-permissions", f"--transform=s,^{COPIED},,"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.errors,
            env={**os.environ, "LC_ALL": "C"}, start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdin is not None
        self.fd = self.proc.stdin.fileno()
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.fd, _F_SETPIPE_SZ, 1 << 20)
        self.stream = TarStream(_Pipe(self.fd), int(time.time()))
        self.files: set[str] = set()
        self.dirs: set[str] = set()

    def failure(self) -> Exception:
        """What tar said, as the error tcm raises."""
        self.errors.seek(0)
        said = self.errors.read(4096).decode("utf-8", "replace").strip()
        first = said.splitlines()[0] if said else f"exit {self.proc.returncode}"
        # "Wrote only N of M bytes": a short write, which a regular file gets from a full disk
        for text, code in (("No space left", errno.ENOSPC), ("Disk quota", errno.EDQUOT),
                           ("Wrote only", errno.ENOSPC),
                           ("Permission denied", errno.EACCES),
                           ("Read-only file system", errno.EROFS)):  # fmt: skip
            if text in said:
                return os_error(OSError(code, os.strerror(code)), "write", self.root)
        return ToolFailed(f"tar, writing the layer's files into {self.root}, failed: {first}")

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait()
        self.errors.close()


class TarWriter:
    """Files handed to a ``tar -x`` per staging dir, as one tar stream each."""

    copies = True

    def __init__(self, tar: str):
        self._tar = tar
        self._children: dict[str, _Child] = {}

    def write(self, where: Where, content: Iterable[memoryview | bytes], size: int) -> None:
        root, rel = where
        child = self._child(root)
        if rel in child.files:
            raise HostileImage(f"layer holds {rel} twice")
        if rel in child.dirs or self._mark_dirs(child, rel.rpartition("/")[0]):
            raise HostileImage(f"the layer holds {os.path.basename(rel)} as a file and as a dir")
        child.files.add(rel)
        try:
            child.stream.add_member(rel, content, size)
        except BrokenPipeError:
            child.proc.wait()
            raise child.failure() from None

    def copy(self, root: str, record: memoryview) -> None:
        child = self._child(root)
        try:
            child.stream.add_record(record)
        except BrokenPipeError:
            child.proc.wait()
            raise child.failure() from None

    def _child(self, root: str) -> _Child:
        child = self._children.get(root)
        if child is None:
            child = self._children[root] = _Child(self._tar, root)
        return child

    @staticmethod
    def _mark_dirs(child: _Child, parent: str) -> bool:
        """Record ``parent`` and its ancestors as dirs; True if one of them is a file."""
        while parent and parent not in child.dirs:
            if parent in child.files:
                return True
            child.dirs.add(parent)
            parent = parent.rpartition("/")[0]
        return False

    def close(self) -> None:
        try:
            for child in self._children.values():
                with contextlib.suppress(BrokenPipeError):  # its exit status says why
                    child.stream.close()
                child.proc.stdin.close()  # type: ignore[union-attr]
                if child.proc.wait() != 0:
                    raise child.failure()
        finally:
            self.abort()

    def abort(self) -> None:
        for child in self._children.values():
            child.kill()
        self._children.clear()
