"""Index a synthetic 20,000-entry cache: full, no-op and 1%-touched re-index, with baselines.

    python bench/index_bench.py [--entries 20000] [--workdir /tmp/tcm-index-bench]

The cache is made by cloning real entries (compiled on the CPU for cuda:80, cuda:90 and
hip:gfx942 by tests/support/compile_kernels.py) under new random base32 keys: files are
hard links to the originals, each clone gets its own group pointing at itself, exactly what a
cache written by Triton at that path holds. Figures are medians of --repeat runs on a warm page
cache. Baselines, in the same run: a full re-read of every entry (``--rescan``), and ``du -sb``
(walking and stat-ing every file, the floor for anything that looks at every file).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tcmtasks import Index  # noqa: E402
from tcmtasks.cache.groups import write_group  # noqa: E402
from tcmtasks.cache.roots import Root  # noqa: E402


def real_entries(workdir: Path) -> Path:
    src = workdir / "seed"
    if not src.exists():
        env = {**os.environ, "TRITON_CACHE_DIR": str(src), "PYTHONPATH": str(REPO)}
        env.pop("TRITON_CACHE_MANAGER", None)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.support.compile_kernels",
                "cuda:80",
                "cuda:90",
                "hip:gfx942",
            ],
            env=env,
            check=True,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
    return src


def build(workdir: Path, n: int, name: str | None = None, *, copy: bool = False) -> Path:
    """Clone the seed entries n times; ``copy`` writes real copies instead of hard links (for
    tools such as tar that store a hard link once)."""
    root = workdir / (name or f"cache-{n}")
    if name is None and root.exists() and sum(1 for _ in os.scandir(root)) == n:
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    seeds = sorted(p for p in real_entries(workdir).iterdir() if any(p.glob("__grp__*")))
    for i in range(n):
        seed = seeds[i % len(seeds)]
        key = base64.b32encode(secrets.token_bytes(32)).decode().rstrip("=")
        dst = root / key
        dst.mkdir()
        grp = next(seed.glob("__grp__*.json"))
        children = json.loads(grp.read_text())["child_paths"]
        for child in children:
            if copy:
                shutil.copyfile(seed / child, dst / child)
            else:
                os.link(seed / child, dst / child)
        write_group(
            dst, grp.name[len("__grp__") : -len(".json")], {c: str(dst / c) for c in children}
        )
    old = time.time() - 3600  # a settled cache: nothing written in the last hour
    for d in root.iterdir():
        for grp in d.glob("__grp__*.json"):
            os.utime(grp, (old, old))
        os.utime(d, (old, old))
    return root


def timed(fn, repeat: int, setup=None) -> float:
    times = []
    for _ in range(repeat):
        if setup:
            setup()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tcm-bench")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    root = build(args.workdir, args.entries)
    print(
        f"synthetic cache: {args.entries} entries at {root} ({time.perf_counter() - t:.1f} s "
        "to build or reuse)"
    )
    roots = [Root(root, "explicit")]
    db = args.workdir / "bench.db"

    def full() -> None:
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            p.unlink(missing_ok=True)
        with Index(db) as idx:
            stats = idx.update(roots)
            assert stats.added == args.entries, stats

    def noop() -> None:
        with Index(db) as idx:
            stats = idx.update(roots)
            assert stats.unchanged == args.entries, stats

    def rescan() -> None:
        with Index(db) as idx:
            stats = idx.update(roots, rescan=True)
            assert stats.updated == args.entries, stats

    touched = sorted(root.iterdir())[::100]

    def touch_one_percent() -> None:
        for d in touched:  # rewrite the group atomically, as doctor --fix and prune do
            grp = next(d.glob("__grp__*.json"))
            write_group(
                d,
                grp.name[len("__grp__") : -len(".json")],
                json.loads(grp.read_text())["child_paths"],
            )

    def reindex_touched() -> None:
        with Index(db) as idx:
            stats = idx.update(roots)
            assert stats.updated == len(touched), stats

    def du() -> None:
        subprocess.run(["du", "-sb", str(root)], check=True, stdout=subprocess.DEVNULL)

    def cli_noop() -> None:
        subprocess.run(
            [sys.executable, "-m", "tcmtasks.cli", "--db", str(db), "index", "-c", str(root)],
            check=True,
            stdout=subprocess.DEVNULL,
            cwd=REPO,
        )

    results = {
        "full index": timed(full, args.repeat),
        "no-op re-index": timed(noop, args.repeat),
        "re-index, 1% touched": timed(reindex_touched, args.repeat, setup=touch_one_percent),
        "baseline: full re-read (--rescan)": timed(rescan, args.repeat),
        "baseline: du -sb": timed(du, args.repeat),
        "tcm index CLI, no-op (process)": timed(cli_noop, args.repeat),
    }
    files = sum(1 for _ in root.glob("*/*"))
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}; {args.entries} entries, {files} files; "
        f"median of {args.repeat}"
    )
    width = max(map(len, results))
    for name, secs in results.items():
        print(f"  {name:<{width}}  {secs:7.3f} s")
    ratio = results["baseline: full re-read (--rescan)"] / results["no-op re-index"]
    print(f"  no-op vs full re-read: {ratio:.0f}x faster")
    print(f"  full index vs du -sb:  {results['full index'] / results['baseline: du -sb']:.1f}x")


if __name__ == "__main__":
    main()
