"""One exception family, so the CLI can print any of them as a one-line, actionable message."""

from __future__ import annotations


class TcmError(Exception):
    """Base of every error tcm raises on purpose; the message says what to do."""

    exit_code = 2


class UsageError(TcmError):
    """Bad input from the user: a malformed target, age, size or key."""


class CacheError(TcmError):
    """A cache root or entry cannot be read or changed."""


class IndexDbError(TcmError):
    """The SQLite index cannot be opened, migrated or written."""


class MissingDependency(TcmError):
    """An optional extra (triton, nvidia-ml-py, a container engine...) is not installed."""

    def __init__(self, what: str, extra: str):
        super().__init__(f"{what} is not installed: pip install 'tcmtasks[{extra}]'")
