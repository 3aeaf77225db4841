"""Runtime hit/miss tracking: did this run compile anything, and which kernels did it use?

Triton looks a kernel up on disk once per specialisation per process, through the cache manager
named by ``TRITON_CACHE_MANAGER`` (docs/cache-formats.md, "Observing lookups").
``TrackingCacheManager`` is ``FileCacheManager`` plus a record of each lookup: a hit exactly when
the group Triton got back still holds ``<name>.json`` (so a relocated cache's group full of dead
paths is a miss, as it is for Triton). On Triton 3.4+ the compilation listener adds each compile's
duration.

Compile time is the listener's (Triton 3.4+) where it saw the compile, else the interval from
the miss to the store of the new group. Every event is appended, one JSON line in one
``write`` to a file per process under ``$TCM_TRACK_DIR`` (default ``~/.local/state/tcm/track``),
before the call that caused it returns: Inductor looks kernels up and compiles them in worker
processes that leave with ``os._exit`` or are terminated (docs/cache-formats.md, "Observing
lookups"), so an event held in memory for later would be lost exactly where it matters. A
lookup costs a disk read anyway; one small append beside it costs a few microseconds
(bench/RESULTS.md). Nothing here imports more than the standard library until Triton itself
asks for the manager class, so it is cheap in every process it lands in.

torch.compile above Triton: ``tcm track`` also sets ``TORCH_TRACE`` (PyTorch's structured
trace, the input of tlparse, a public environment variable), and reads Inductor's FX-graph and
AOTAutograd cache hits and misses, and the kernels an FX-graph hit loaded from its bundle
without asking Triton, from the logs each process writes (``read_inductor``). The artifact names
(``fx_graph_cache_{hit,miss,bypass}``, ``aotautograd_cache_{hit,miss,bypass}``) are the same in
torch 2.6 through 2.13; counters inside the process (``torch._dynamo.utils.counters``) would
need a hook in the user's program and are gone when a process is killed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANAGER = "tcmtasks.track:TrackingCacheManager"

_lock = threading.Lock()
_fd: tuple[int, str, int] | None = None  # (pid, dir, fd) of this process's event file
_miss_started: dict[str, float] = {}


def default_track_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(state) / "tcm" / "track"


def track_dir() -> Path:
    env = os.environ.get("TCM_TRACK_DIR")
    return Path(env) if env else default_track_dir()


def flush() -> None:
    """Nothing to do: every event is on disk when ``record`` returns (kept for callers of the
    earlier, buffering versions)."""


def _event_fd() -> int:
    """This process's event file, opened once (again after a fork, where a child writes its
    own, or when TCM_TRACK_DIR changes, as ``TritonCacheTracker.install`` does)."""
    global _fd
    pid, directory = os.getpid(), track_dir()
    if _fd is None or _fd[:2] != (pid, str(directory)):
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            directory / f"events-{pid}.jsonl",
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
            0o644,
        )
        if _fd is not None and _fd[0] == pid:
            os.close(_fd[2])
        _fd = (pid, str(directory), fd)
    return _fd[2]


def record(event: str, key: str, name: str, root: str, **extra: Any) -> None:
    """Append one event. One ``write`` on an ``O_APPEND`` file: a killed process leaves whole
    lines (a torn last line at worst, which readers skip)."""
    line = json.dumps(
        {"e": event, "key": key, "name": name, "root": root, "t": time.time(),
         "pid": os.getpid(), **extra}
    )  # fmt: skip
    try:
        with _lock:
            os.write(_event_fd(), (line + "\n").encode())
    except OSError:
        pass  # never let tracking break the workload


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

        def get_file(self, filename: str) -> str | None:
            path = super().get_file(filename)
            if self._tcm_track and _is_helper(filename):  # Triton's C helpers: compiled C
                root = os.path.dirname(self.cache_dir)
                name = filename.split(".", 1)[0]
                record("helper-hit" if path else "helper-miss", self.key, name, root)
            return path  # type: ignore[no-any-return]

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


_HELPERS = ("cuda_utils.", "hip_utils.", "__triton_launcher.")


def _is_helper(filename: str) -> bool:
    """``<name><EXT_SUFFIX>`` of a C module ``compile_module_from_src`` builds."""
    return filename.startswith(_HELPERS) and filename.endswith(".so")


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
class InductorStats:
    """Inductor's own cache outcomes in a tracked run, from its structured trace."""

    fx_hits: int = 0
    fx_misses: int = 0
    fx_bypasses: int = 0  # not cacheable: compiled every time
    aot_hits: int = 0
    aot_misses: int = 0
    aot_bypasses: int = 0
    #: AOTAutograd misses in a compile attempt torch then restarted (read_inductor): the
    #: attempt never finishes, so no cache can hold it; not counted as compiled
    aot_restarted: int = 0
    bundled_kernels: int = 0  # loaded from FX-graph entries, not through Triton's cache
    processes: int = 0  # trace logs read

    @property
    def graphs_compiled(self) -> int:
        return self.fx_misses + self.fx_bypasses

    @property
    def compiled(self) -> bool:
        return bool(self.graphs_compiled or self.aot_misses or self.aot_bypasses)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "graphs_compiled": self.graphs_compiled}


@dataclass
class TrackStats:
    """What a tracked run (or several) did: every lookup, by kernel, and Inductor's caches."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    compile_seconds: float = 0.0
    cache_dirs: list[str] = field(default_factory=list)
    kernels: list[KernelStats] = field(default_factory=list)
    inductor: InductorStats | None = None  # None: no torch.compile seen
    #: Triton's C helpers (cuda_utils, launchers) found in the cache, and built with gcc
    helper_hits: int = 0
    helpers_built: list[str] = field(default_factory=list)
    helper_dirs: list[str] = field(default_factory=list)  # the caches the built ones missed in

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def compiled_nothing(self) -> bool:
        built = self.helpers_built
        return not self.misses and not built and not (self.inductor and self.inductor.compiled)

    def verdict(self) -> str:
        """One line: compiled nothing, or what was compiled."""
        if self.compiled_nothing:
            return "compiled nothing" + (
                ": every lookup hit" if self.lookups or self.inductor else ""
            )
        parts = []
        if self.misses:
            parts.append(f"{self.misses} kernel{'s' if self.misses != 1 else ''}")
        ind = self.inductor
        if ind is not None and ind.graphs_compiled:
            n = ind.graphs_compiled
            parts.append(f"{n} graph{'s' if n != 1 else ''}")
        elif ind is not None and ind.compiled:
            parts.append("the AOTAutograd graphs (their cache missed)")
        if self.helpers_built:
            n = len(self.helpers_built)
            parts.append(f"{n} C helper{'s' if n != 1 else ''} ({', '.join(self.helpers_built)})")
        return "compiled " + " and ".join(parts)

    @property
    def new_kernels(self) -> list[str]:
        """Keys of kernels this run compiled and stored."""
        return [k.key for k in self.kernels if k.stores]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict(), "compiled_nothing": self.compiled_nothing,
            "lookups": self.lookups, "hits": self.hits, "misses": self.misses,
            "stores": self.stores, "compile_seconds": self.compile_seconds,
            "cache_dirs": self.cache_dirs, "new_kernels": self.new_kernels,
            "kernels": [k.__dict__ for k in self.kernels],
            "inductor": self.inductor.to_dict() if self.inductor else None,
            "helper_hits": self.helper_hits, "helpers_built": self.helpers_built,
            "helper_dirs": self.helper_dirs,
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
        if kind == "helper-hit":
            stats.helper_hits += 1
            continue
        if kind == "helper-miss":
            stats.helpers_built.append(str(ev.get("name", "?")))
            if ev.get("root") and ev["root"] not in stats.helper_dirs:
                stats.helper_dirs.append(str(ev["root"]))  # where it was looked for
            continue
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


def take_spool(directory: Path) -> tuple[TrackStats, list[Path]]:
    """Take the events spooled in ``directory`` (by processes tracked outside ``tcm track``):
    each file is renamed before it is read, so a writer that appends again starts a new file
    rather than losing events into one already read. The caller deletes the taken files
    (``done_with``) only once their counts are in the index: a run killed before that leaves
    them, and the next run takes them again (as it does the files of any taker that died)."""
    events: list[dict[str, Any]] = []
    taken: list[Path] = []
    me = os.getpid()
    names = sorted(Path(directory).glob("events-*.jsonl"))
    for path in sorted(Path(directory).glob("taken-*.jsonl")):
        owner = path.name.split("-", 2)[1]
        if owner.isdigit() and int(owner) != me and not _alive(int(owner)):
            names.append(path)  # left by a tcm index that was killed while merging
    for path in names:
        base = path.name.split("-", 2)[2] if path.name.startswith("taken-") else path.name
        target = path.with_name(f"taken-{me}-{base}")
        try:
            os.rename(path, target)
        except OSError:
            continue
        taken.append(target)
        events += read_events_file(target)
    return summarize(events), taken


def done_with(taken: list[Path]) -> None:
    for path in taken:
        path.unlink(missing_ok=True)


def ingest(directory: Path) -> TrackStats:
    """``take_spool`` and drop the files at once (for callers with nowhere to keep counts)."""
    stats, taken = take_spool(directory)
    done_with(taken)
    return stats


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def read_events_file(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    events = []
    for line in text.splitlines():
        with contextlib.suppress(json.JSONDecodeError, RecursionError):
            events.append(json.loads(line))  # a torn last line of a killed process: skip
    return events


_ARTIFACT = re.compile(
    r'"artifact": \{"name": "(fx_graph_cache|aotautograd_cache)_(hit|miss|bypass)"'
)
_BUNDLED = re.compile(r"cached_kernel_names=\[([^\]]*)\]")
_ATTEMPT = re.compile(r'"frame_id": (\d+), "frame_compile_id": (\d+), "attempt": (\d+)')


def trace_dir(events_dir: Path) -> Path:
    """Where ``tcm track`` asks torch for its structured trace, beside the events."""
    return Path(events_dir) / "torch-trace"


def read_inductor(directory: Path, since: float = 0.0) -> InductorStats | None:
    """Inductor's cache outcomes from the structured-trace logs in ``directory`` (one per
    process; those older than ``since`` are someone else's); None when no process wrote one.
    A log is read line by line: only artifact lines and the payload of an FX-graph hit (which
    names the kernels loaded from its bundle) are looked at.

    Dynamo may restart a frame's compile (``compile_id 0/0`` attempt 0, then attempt 1): with
    ``dynamic=True`` OPT's first attempt ends in ``TensorifyScalarRestartAnalysis`` after its
    AOTAutograd lookup missed. That attempt never completes, so its entry is never written,
    on the warm machine or anywhere: an AOTAutograd miss or bypass in an attempt that a later
    attempt of the same compile superseded is ``aot_restarted``, not a graph compiled."""
    stats = InductorStats()
    for path in sorted(Path(directory).glob("*.log")) if Path(directory).is_dir() else []:
        try:
            if path.stat().st_mtime < since:
                continue
            f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
        except OSError:
            continue
        stats.processes += 1
        last_attempt: dict[tuple[str, str], int] = {}
        aot_outcomes: list[tuple[str, tuple[str, str], int]] = []
        with f:
            want_payload = False
            for line in f:
                if want_payload and line.startswith("\t"):
                    if m := _BUNDLED.search(line):
                        stats.bundled_kernels += len(re.findall(r"'[^']*'", m.group(1)))
                    continue
                want_payload = False
                m = _ARTIFACT.search(line) if line.startswith("V") else None
                if m is None:
                    continue
                level, outcome = m.groups()
                want_payload = level == "fx_graph_cache" and outcome == "hit"
                a = _ATTEMPT.search(line)
                compile_id, attempt = ((a[1], a[2]), int(a[3])) if a else (("?", "?"), 0)
                last_attempt[compile_id] = max(attempt, last_attempt.get(compile_id, 0))
                if level == "aotautograd_cache":  # judged once the later attempts are read
                    aot_outcomes.append((outcome, compile_id, attempt))
                else:
                    _count(stats, "fx", outcome)
        for outcome, compile_id, attempt in aot_outcomes:
            if outcome != "hit" and attempt < last_attempt[compile_id]:
                stats.aot_restarted += 1
            else:
                _count(stats, "aot", outcome)
    return stats if stats.processes else None


def _count(stats: InductorStats, level: str, outcome: str) -> None:
    name = f"{level}_" + {"hit": "hits", "miss": "misses", "bypass": "bypasses"}[outcome]
    setattr(stats, name, getattr(stats, name) + 1)


def tracking_env(events_dir: Path, cache_dir: Path | None = None) -> dict[str, str]:
    """Variables that turn tracking on in a child process (and make tcmtasks importable there,
    even from another Python environment: this module needs only the standard library);
    ``TORCH_TRACE`` too, unless the user set one already (then theirs is read)."""
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = {
        "TRITON_CACHE_MANAGER": MANAGER,
        "TCM_TRACK_DIR": str(events_dir),
        "PYTHONPATH": os.pathsep.join(
            p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    if not os.environ.get("TORCH_TRACE"):
        env["TORCH_TRACE"] = str(trace_dir(events_dir))
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
        env.pop("TORCH_TRACE", None)  # torch reads it once, at import: too late here
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
