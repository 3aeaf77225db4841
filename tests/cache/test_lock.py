"""The cache lock names who holds it, from the kernel's own record of the flock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tcmtasks.cache.lock import LOCK_NAME, locked
from tcmtasks.errors import CacheLocked

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print(os.getpid(), flush=True)
time.sleep(30)
"""


def test_the_holder_is_named_before_it_writes_its_pid(tmp_path: Path) -> None:
    """A holder that has taken the lock but not yet written its pid (or never will: another
    tool) is still named: /proc/locks says who holds the flock. Before, the message read
    "another tcm (pid ?)"."""
    lock = tmp_path / LOCK_NAME
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        pid = holder.stdout.readline().strip()  # type: ignore[union-attr]
        assert lock.read_text() == ""  # it wrote nothing into the file
        with pytest.raises(CacheLocked) as info, locked(tmp_path):
            pass
        assert f"another tcm (pid {pid}) is changing {tmp_path}" in str(info.value)
        assert info.value.exit_code == 4
    finally:
        holder.kill()
        holder.wait()
    with locked(tmp_path):  # the kernel dropped it with the process
        assert lock.read_text().strip().isdigit()
