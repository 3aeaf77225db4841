"""Progress: on a terminal only, never with --quiet, and a line that says rate and time left."""

from __future__ import annotations

import io

from rich.console import Console

from tcmtasks.cli import common
from tcmtasks.progress import ProgressEvent


def _terminal(monkeypatch) -> io.StringIO:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100)
    monkeypatch.setattr(common, "err", console)
    return buf


def test_bars_on_a_terminal_show_count_and_rate(monkeypatch):
    buf = _terminal(monkeypatch)
    monkeypatch.setitem(common.state, "quiet", False)
    with common.progress_bars() as update:
        assert update is not None
        for n in range(0, 20001, 5000):
            update(ProgressEvent("indexing", n, 20000))
        update(ProgressEvent("extracting", 3 << 20, 10 << 20, "bytes"))
    text = buf.getvalue()
    assert "indexing" in text and "20,000/20,000" in text
    assert "extracting" in text and "MB" in text


def test_no_bars_when_quiet_or_piped(monkeypatch):
    _terminal(monkeypatch)
    monkeypatch.setitem(common.state, "quiet", True)
    with common.progress_bars() as update:
        assert update is None
    monkeypatch.setitem(common.state, "quiet", False)
    monkeypatch.setattr(common, "err", Console(file=io.StringIO(), force_terminal=False))
    with common.progress_bars() as update:
        assert update is None
