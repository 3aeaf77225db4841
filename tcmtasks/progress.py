"""Progress of long operations, reported through a callback so each face draws its own: the
CLI a bar on a terminal, the pipeline a log line, a Python caller whatever it likes.

An operation calls ``progress(ProgressEvent(...))`` as work advances; ``total`` is None while
unknown (a stream of unknown length). Events are cheap to make; operations throttle nothing,
the receiver decides how often to redraw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Unit = Literal["entries", "bytes"]


@dataclass(frozen=True)
class ProgressEvent:
    task: str  # what is advancing: "indexing", "removing", "extracting", "copying"...
    done: int
    total: int | None = None
    unit: Unit = "entries"


Progress = Callable[[ProgressEvent], None]


def counter(
    progress: Progress | None, task: str, unit: Unit = "entries"
) -> Callable[[int, int], None] | None:
    """Adapt ``progress`` to the ``(done, total)`` callbacks of the layers below (a total of
    0 means unknown); None when nobody listens, so those layers skip the work."""
    if progress is None:
        return None

    def update(done: int, total: int) -> None:
        progress(ProgressEvent(task, done, total or None, unit))

    return update
