"""Every exception tcm raises on purpose, in one tree, each with the exit code the CLI uses.

A script tells failures apart by exit code (``tcm --help`` and the README carry this table):

====  =================  =====================================================================
code  class              meaning
====  =================  =====================================================================
0                        done
1     CheckFailed        the operation ran and its check failed (``--require-hits``, doctor)
2     UsageError         bad flag, value, reference, recipe, trust file or key
3     ImageError         image or registry: unreachable, refused, corrupt, hostile, incompatible,
                         untrusted (the node's policy.json or registries.conf)
4     CacheError         cache or index state: unreadable, corrupt, locked by another tcm
5     EnvError           this machine: missing extra or tool, no GPU, disk full
70                       a bug in tcm (a traceback with ``TCM_DEBUG=1``)
130                      interrupted (Ctrl-C)
====  =================  =====================================================================

Errors of the layers below (``OSError``, ``urllib``, ``tarfile``, ``json``) are mapped into
these where they enter tcm (``map_os_error`` for the file system), so a message always says
what happened in the user's terms and what to do about it. The pattern is httpx's
``_exceptions.py``: grouped by cause, one docstring each.
"""

from __future__ import annotations

import contextlib
import errno
import tarfile
from collections.abc import Iterator
from pathlib import Path

#: Exit code for an unexpected exception: a bug (sysexits.h EX_SOFTWARE).
BUG_EXIT = 70
INTERRUPTED_EXIT = 130


class TcmError(Exception):
    """Base of every error tcm raises on purpose; the message says what to do."""

    exit_code = 2


# -- 1: the operation ran, its check failed ----------------------------------------------------


class CheckFailed(TcmError):
    """The command did its work and found what the user asked it to refuse (a compile under
    ``--require-hits``, problems found by ``doctor``)."""

    exit_code = 1


# -- 2: usage ---------------------------------------------------------------------------------


class UsageError(TcmError):
    """Bad input from the user: a malformed target, age, size, key, reference or flag."""

    exit_code = 2


class RecipeError(UsageError):
    """A pipeline recipe is not valid YAML, breaks the schema, or names something unknown."""


class TrustConfigError(UsageError):
    """policy.json, registries.d, registries.conf or a key file cannot be used as given (does
    not parse, names an unknown type, a key that is not one, a wrong passphrase)."""


# -- 3: images and registries -------------------------------------------------------------------


class NeedsGpu(UsageError, RuntimeError):
    """Warming without a GPU met what only the GPU can answer (a kernel choice, a benchmark,
    a device allocation): warm that model on the GPU. Also a RuntimeError, as torch's own "no
    NVIDIA driver" is, so torch's handlers see no change when a patch raises it."""


class ImageError(TcmError):
    """An image cannot be read, written or used: missing, malformed or incompatible."""

    exit_code = 3


class DigestMismatch(ImageError):
    """A blob's bytes do not match its digest or declared size (corrupt or tampered with)."""


class HostileImage(ImageError):
    """A layer holds something that must never be written (``..``, links, devices, bombs):
    nothing was installed."""


class IncompatibleImage(ImageError):
    """Nothing in the image can be used on this host (other GPU, Triton build, Python ABI)."""


class RegistryError(ImageError):
    """A registry could not be reached or refused a request."""


class UploadSessionLost(RegistryError):
    """An upload session that cannot go on (the registry dropped it, or holds less than was
    sent): a push starts a new one, and reports this only when new ones fail too."""


class AuthError(RegistryError):
    """A registry refused the credentials, or asked for auth tcm cannot give."""


class UntrustedImage(ImageError):
    """The node's trust policy (containers' policy.json) refused the image: no signature, a
    wrong one, a ``reject`` rule; or registries.conf blocks its registry. Refused before any
    layer byte was fetched: nothing was installed."""


class BadSignature(UntrustedImage):
    """One signature that does not verify or does not say what a signature must; the policy
    check notes why and tries the next (the image is refused only if none is accepted)."""


# -- 4: cache and index state ---------------------------------------------------------------------


class CacheError(TcmError):
    """A cache root or entry cannot be read or changed."""

    exit_code = 4


class CacheLocked(CacheError):
    """Another tcm process is changing the same cache root."""


class GroupFormatError(CacheError, ValueError):
    """A ``__grp__*.json`` file is not JSON, or has no ``child_paths`` mapping."""


class IndexDbError(CacheError):
    """The SQLite index cannot be opened, migrated or written."""


# -- 5: this machine ----------------------------------------------------------------------------


class EnvError(TcmError):
    """Something this machine lacks: an optional extra, a tool, a GPU, disk space."""

    exit_code = 5


class MissingDependency(EnvError):
    """An optional extra (triton, torch, a container engine client...) is not installed."""

    def __init__(self, what: str, extra: str | None = None, *, hint: str | None = None):
        how = hint or (f"pip install 'tcmtasks[{extra}]'" if extra else "install it")
        super().__init__(f"{what} is not installed: {how}")


class NoGpu(EnvError):
    """The operation needs a GPU (or a named target) and none is visible."""


class DiskFull(EnvError):
    """A write failed for lack of space (ENOSPC) or quota (EDQUOT)."""


class ToolFailed(EnvError):
    """An external program tcm drives (a container engine, a workload) failed."""


# -- 130: interrupted ------------------------------------------------------------------------------


class Interrupted(TcmError):
    """The user pressed Ctrl-C; what was half-done was undone or left for the next run."""

    exit_code = INTERRUPTED_EXIT


# -- raised inside a library below tcm, turned into one of the above where it is caught ----------


class OversizeHeader(tarfile.HeaderError):
    """A tar header extension larger than any real one (a memory bomb); extraction reports it
    as ``HostileImage``."""


class CorruptTar(tarfile.TarError):
    """A layer's tar stream is malformed (oci/tarread.py: a bad checksum, a truncated member);
    extraction reports it as ``ImageError``, the layer's fault."""


# -- mapping the layers below -----------------------------------------------------------------


def os_error(exc: OSError, doing: str, path: str | Path | None = None) -> TcmError:
    """The tcm error for an ``OSError`` met while ``doing`` something to ``path``."""
    where = path if path is not None else exc.filename
    what = f"{doing} {where}" if where is not None else doing
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(
            f"cannot {what}: the disk is full ({reason}); free space there and run this "
            "again (nothing partial was kept)"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CacheError(f"cannot {what}: {reason}; check its permissions or mount")
    return CacheError(f"cannot {what}: {reason}")


@contextlib.contextmanager
def map_os_error(doing: str, path: str | Path | None = None) -> Iterator[None]:
    """Turn an ``OSError`` raised in the block into the tcm error that says what happened."""
    try:
        yield
    except OSError as exc:
        raise os_error(exc, doing, path) from exc
