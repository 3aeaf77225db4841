"""Runtime hit/miss tracking: did this run compile anything, and which kernels did it use?

Triton looks a kernel up on disk once per specialisation per process, through the cache manager
named by ``TRITON_CACHE_MANAGER`` (docs/cache-formats.md, "Observing lookups").
``TrackingCacheManager`` is ``FileCacheManager`` plus a record of each lookup: a hit exactly when
the group Triton got back still holds ``<name>.json`` (so a relocated cache's group full of dead
paths is a miss, as it is for Triton). On Triton 3.4+ the compilation listener adds each compile's
duration.

Compile time is the listener's (Triton 3.4+) where it saw the compile, else the interval from
the miss to the store of the new group. Events are buffered in memory and appended, one JSON
line each, to a file per process under ``$TCM_TRACK_DIR`` (default ``~/.local/state/tcm/track``):
at exit, every 64 events, or when the last write is half a second old. Nothing here imports
more than the standard library until Triton itself asks for the manager class, so it is cheap
in every process it lands in.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANAGER = "tcmtasks.track:TrackingCacheManager"
FLUSH_EVENTS = 64
FLUSH_SECONDS = 0.5

_lock = threading.Lock()
_buffer: list[str] = []
_miss_started: dict[str, float] = {}
_last_flush = time.monotonic()


def default_track_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(state) / "tcm" / "track"


def track_dir() -> Path:
    env = os.environ.get("TCM_TRACK_DIR")
    return Path(env) if env else default_track_dir()


def flush() -> None:
    """Append this process's buffered events to its event file."""
    global _last_flush
    with _lock:
        if not _buffer:
            return
        lines, _buffer[:] = "".join(_buffer), []
        _last_flush = time.monotonic()
    try:
        directory = track_dir()
        directory.mkdir(parents=True, exist_ok=True)
        # O_APPEND writes of one buffer are not interleaved with other processes' writes to
        # other files; each process has its own file anyway.
        fd = os.open(
            directory / f"events-{os.getpid()}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)
    except OSError:
        pass  # never let tracking break the workload


def record(event: str, key: str, name: str, root: str, **extra: Any) -> None:
    line = json.dumps(
        {
            "e": event,
            "key": key,
            "name": name,
            "root": root,
            "t": time.time(),
            "pid": os.getpid(),
            **extra,
        }
    )
    with _lock:
        _buffer.append(line + "\n")
        due = len(_buffer) >= FLUSH_EVENTS or time.monotonic() - _last_flush > FLUSH_SECONDS
    if due:
        flush()


def _forget_parent_buffer() -> None:
    _buffer.clear()  # a forked child must not write its parent's events again


atexit.register(flush)
os.register_at_fork(after_in_child=_forget_parent_buffer)


def _base32(hex_key: str) -> str:
    return base64.b32encode(bytes.fromhex(hex_key)).decode().rstrip("=")


def _install_listener() -> None:
    """Chain a compilation listener (Triton 3.4+) that records each compile's duration."""
    try:
        from triton import knobs
    except ImportError:
        return
    comp = getattr(knobs, "compilation", None)
    if comp is None or getattr(comp.listener, "_tcm", False):
        return
    previous = comp.listener

    def listener(
        *, src: Any, metadata: Any, metadata_group: Any, times: Any, cache_hit: bool
    ) -> None:
        if not cache_hit and isinstance(metadata.get("hash"), str):
            with contextlib.suppress(ValueError):
                record(
                    "compile",
                    _base32(metadata["hash"]),
                    str(metadata.get("name", "")),
                    "",
                    seconds=times.total / 1e6,
                )
        if previous is not None:
            previous(
                src=src,
                metadata=metadata,
                metadata_group=metadata_group,
                times=times,
                cache_hit=cache_hit,
            )

    listener._tcm = True  # type: ignore[attr-defined]
    comp.listener = listener


def _make_manager_class() -> type:
    from triton.runtime.cache import FileCacheManager

    class TrackingCacheManager(FileCacheManager):  # type: ignore[misc]
        """``FileCacheManager`` that records each lookup and store (see the module doc)."""

        def __init__(self, key: str, override: bool = False, dump: bool = False) -> None:
            super().__init__(key, override=override, dump=dump)
            self._tcm_track = not (override or dump)

        def get_group(self, filename: str) -> dict[str, str] | None:
            group = super().get_group(filename)
            if self._tcm_track and filename.endswith(".json"):
                hit = group is not None and filename in group
                if not hit:
                    _miss_started[self.key] = time.monotonic()
                root = os.path.dirname(self.cache_dir)
                record("hit" if hit else "miss", self.key, filename[: -len(".json")], root)
            return group  # type: ignore[no-any-return]

        def put_group(self, filename: str, group: dict[str, str]) -> str:
            path = super().put_group(filename, group)
            if self._tcm_track:
                # miss -> store brackets the compile: the duration on Triton versions without
                # a listener, and for the first compile of a process (the listener is chained
                # only once Triton has loaded this class, after that compile began)
                started = _miss_started.pop(self.key, None)
                extra = {"seconds": time.monotonic() - started} if started is not None else {}
                root = os.path.dirname(self.cache_dir)
                record("store", self.key, filename[: -len(".json")], root, **extra)
            return str(path)

    _install_listener()
    return TrackingCacheManager


def __getattr__(name: str) -> Any:
    # Built on first use: Triton resolves TRITON_CACHE_MANAGER with getattr on this module.
    if name == "TrackingCacheManager":
        cls = _make_manager_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)


# -- reading events -----------------------------------------------------------------------------


@dataclass
class KernelStats:
    key: str
    name: str
    root: str
    hits: int = 0
    misses: int = 0
    stores: int = 0
    compile_seconds: float = 0.0
    last_used: float = 0.0


@dataclass
class TrackStats:
    """What a tracked run (or several) did: every lookup, by kernel."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    compile_seconds: float = 0.0
    cache_dirs: list[str] = field(default_factory=list)
    kernels: list[KernelStats] = field(default_factory=list)

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def new_kernels(self) -> list[str]:
        """Keys of kernels this run compiled and stored."""
        return [k.key for k in self.kernels if k.stores]

    def to_dict(self) -> dict[str, Any]:
        return {
            "lookups": self.lookups, "hits": self.hits, "misses": self.misses,
            "stores": self.stores, "compile_seconds": self.compile_seconds,
            "cache_dirs": self.cache_dirs, "new_kernels": self.new_kernels,
            "kernels": [k.__dict__ for k in self.kernels],
        }  # fmt: skip


def read_events(directory: Path) -> list[dict[str, Any]]:
    return [
        ev for p in sorted(Path(directory).glob("events-*.jsonl")) for ev in read_events_file(p)
    ]


def summarize(events: Iterable[dict[str, Any]]) -> TrackStats:
    stats = TrackStats()
    kernels: dict[str, KernelStats] = {}
    compile_times: dict[str, float] = {}
    roots: list[str] = []
    bracketed: dict[str, float] = {}  # miss -> store intervals, where no listener reported
    for ev in events:
        kind, key = ev.get("e"), ev.get("key", "")
        if kind == "compile":
            compile_times[key] = compile_times.get(key, 0.0) + float(ev.get("seconds", 0.0))
            continue
        if kind == "store" and "seconds" in ev:
            bracketed[key] = bracketed.get(key, 0.0) + float(ev["seconds"])
        k = kernels.setdefault(key, KernelStats(key, ev.get("name", ""), ev.get("root", "")))
        if ev.get("root") and ev["root"] not in roots:
            roots.append(ev["root"])
        k.last_used = max(k.last_used, float(ev.get("t", 0.0)))
        if kind == "hit":
            k.hits += 1
            stats.hits += 1
        elif kind == "miss":
            k.misses += 1
            stats.misses += 1
        elif kind == "store":
            k.stores += 1
            stats.stores += 1
    for key, secs in bracketed.items():
        compile_times.setdefault(key, secs)
    for key, secs in compile_times.items():
        if key in kernels:
            kernels[key].compile_seconds += secs
        stats.compile_seconds += secs
    stats.kernels = sorted(kernels.values(), key=lambda k: (k.name, k.key))
    stats.cache_dirs = roots
    return stats


def ingest(directory: Path) -> TrackStats:
    """Take the events spooled in ``directory`` (by processes tracked outside ``tcm track``):
    each file is renamed before it is read and deleted after, so a writer that flushes again
    starts a new file rather than losing events into one already read."""
    events: list[dict[str, Any]] = []
    for path in sorted(Path(directory).glob("events-*.jsonl")):
        taken = path.with_name(f"taken-{os.getpid()}-{path.name}")
        try:
            os.rename(path, taken)
        except OSError:
            continue
        events += read_events_file(taken)
        taken.unlink(missing_ok=True)
    return summarize(events)


def read_events_file(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    events = []
    for line in text.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            events.append(json.loads(line))  # a torn last line of a killed process: skip
    return events


def tracking_env(events_dir: Path, cache_dir: Path | None = None) -> dict[str, str]:
    """Variables that turn tracking on in a child process (and make tcmtasks importable there,
    even from another Python environment: this module needs only the standard library)."""
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = {
        "TRITON_CACHE_MANAGER": MANAGER,
        "TCM_TRACK_DIR": str(events_dir),
        "PYTHONPATH": os.pathsep.join(
            p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    if cache_dir is not None:
        env["TRITON_CACHE_DIR"] = str(cache_dir)
    return env


class TritonCacheTracker:
    """Track this process (and children it starts afterwards) from Python.

    >>> tracker = TritonCacheTracker(cache_dir="/tmp/cache").install()
    >>> ...  # launch kernels
    >>> tracker.summary()["misses"]   # 0 when the cache covered everything
    """

    def __init__(self, cache_dir: str | Path | None = None):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._events = Path(tempfile.mkdtemp(prefix="tcm-track-"))
        self._saved: dict[str, str | None] | None = None

    def install(self) -> TritonCacheTracker:
        if self._saved is not None:
            return self
        env = tracking_env(self._events, self.cache_dir)
        env.pop("PYTHONPATH")  # this process already imports tcmtasks
        current = os.environ.get("TRITON_CACHE_MANAGER")
        if current not in (None, MANAGER):
            from .errors import UsageError

            raise UsageError(
                f"TRITON_CACHE_MANAGER is already {current}; tracking needs its "
                "own manager: unset it first"
            )
        self._saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        return self

    def uninstall(self) -> None:
        if self._saved is None:
            return
        flush()
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved = None

    def stats(self) -> TrackStats:
        flush()
        return summarize(read_events(self._events))

    def summary(self) -> dict[str, Any]:
        s = self.stats()
        return {
            "cache_dir": str(self.cache_dir) if self.cache_dir else next(iter(s.cache_dirs), None),
            "hits": s.hits,
            "misses": s.misses,
            "new_kernels": s.new_kernels,
            "per_kernel": _per_kernel(s.kernels),
        }

    def reset(self) -> None:
        flush()
        for path in self._events.glob("events-*.jsonl"):
            path.unlink(missing_ok=True)

    def __enter__(self) -> TritonCacheTracker:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()


def _per_kernel(kernels: list[KernelStats]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for k in kernels:
        d = out.setdefault(k.name, {"hits": 0, "misses": 0})
        d["hits"] += k.hits
        d["misses"] += k.misses
    return out
