"""The track operation: run a command and count what Triton looked up, hit and compiled."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import track as tracking
from ..errors import TcmError, UsageError
from ..track import TrackStats
from ._common import DbPath, log, open_index


@dataclass
class TrackResult:
    stats: TrackStats
    returncode: int  # the command's
    index_updated: int  # entries whose hit counts were updated
    index_error: str | None = None  # why the index could not be updated (the report stands)

    @property
    def compiled(self) -> bool:
        """Whether anything was compiled: a Triton kernel in any process, or an Inductor
        graph."""
        return not self.stats.compiled_nothing

    def to_dict(self) -> dict[str, Any]:
        out = {
            **self.stats.to_dict(),
            "returncode": self.returncode,
            "index_updated": self.index_updated,
        }
        if self.index_error:
            out["index_error"] = self.index_error
        return out


def track(
    command: list[str],
    *,
    cache_dir: Path | None = None,
    record: bool = True,
    db: DbPath = None,
) -> TrackResult:
    """Run ``command`` with tcm's cache manager in every Triton it starts; count lookups,
    hits, misses and compile time per kernel; add them to the index unless ``record`` is
    False. The command's output is untouched. A failed index update does not lose the
    report: it is returned in ``index_error``."""
    if not command:
        raise UsageError("give the command to run after --, e.g. tcm track -- python serve.py")
    current = os.environ.get("TRITON_CACHE_MANAGER")
    if current not in (None, tracking.MANAGER):
        raise UsageError(
            f"TRITON_CACHE_MANAGER is set to {current}; tcm track needs its own cache "
            "manager: unset it for this run"
        )
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="tcm-track-") as events:
        env = {**os.environ, **tracking.tracking_env(Path(events), cache_dir)}
        try:
            proc = subprocess.Popen(command, env=env)
        except FileNotFoundError:
            raise UsageError(f"command not found: {command[0]}") from None
        except PermissionError:
            raise UsageError(f"command not executable: {command[0]}") from None
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # the child got the same SIGINT; let it finish, then report
            rc = proc.wait()
        stats = tracking.summarize(tracking.read_events(Path(events)))
        traces = Path(env["TORCH_TRACE"])
        stats.inductor = tracking.read_inductor(
            traces, since=0.0 if traces == tracking.trace_dir(Path(events)) else started - 1
        )
    result = TrackResult(stats, rc, 0)
    if record and stats.kernels:
        try:
            with open_index(db) as idx:
                result.index_updated = idx.record_usage(stats)
        except TcmError as exc:
            result.index_error = str(exc)
            log.warning("the hits were not added to the index: %s", exc)
    return result
