"""Prune, dedup and gc on the synthetic 20,000-entry cache, each beside a naive baseline.

    python bench/prune_bench.py [--entries 20000]

Each operation runs the ``tcm`` CLI end to end as a process (lock, index refresh, plan, apply,
re-index) on a fresh copy of the cache; the baseline does the same deletion with coreutils and
none of the care (no group rewrite, no atomic rename, no index): the floor for the bytes moved.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_bench import REPO, build


def tcm(db: Path, *args: str) -> tuple[float, dict]:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tcmtasks.cli", "--db", str(db), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    secs = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(proc.stdout + proc.stderr)
    return secs, json.loads(proc.stdout)


def shell(cmd: str) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=20000)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tcm-bench")
    args = ap.parse_args()

    def fresh_copy() -> Path:
        """A new cache of the same entries, groups pointing at it (a copy would point away)."""
        return build(args.workdir, args.entries, "prune-work")

    db = args.workdir / "prune.db"
    rows = []

    def prepared() -> Path:
        c = fresh_copy()
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            p.unlink(missing_ok=True)
        tcm(db, "index", "-c", str(c), "--json")  # a user's index exists already
        return c

    c = prepared()
    secs, rep = tcm(db, "prune", "-c", str(c), "-y", "--json")
    c = fresh_copy()
    base = shell(f"find {c} \\( -name '*.ttir' -o -name '*.ttgir' -o -name '*.llir' \\) -delete")
    rows.append(
        (
            "prune IR (all entries)",
            secs,
            base,
            "find -delete of the IR files",
            f"{rep['result']['done']} entries, {rep['result']['freed'] / 2**20:.0f} MiB",
        )
    )

    c = prepared()
    total = sum(f.stat().st_size for f in c.glob("*/*"))
    secs, rep = tcm(db, "gc", "-c", str(c), "--max-size", str(total // 2), "-y", "--json")
    gone = rep["result"]["done"]
    c = fresh_copy()
    victims = sorted(c.iterdir())[:gone]
    listing = args.workdir / "victims.txt"
    listing.write_text("\0".join(map(str, victims)))
    base = shell(f"xargs -0 rm -rf < {listing}")
    rows.append(
        (
            "gc to half the size",
            secs,
            base,
            f"rm -rf of as many dirs ({gone})",
            f"{gone} entries, {rep['result']['freed'] / 2**20:.0f} MiB",
        )
    )

    c = prepared()
    secs, rep = tcm(db, "prune", "-c", str(c), "--dedup", "-y", "--json")
    dupes = rep["result"]["done"]
    c = fresh_copy()
    base = shell(f"find {c} -name '*.cubin' -o -name '*.hsaco' | xargs sha256sum > /dev/null")
    rows.append(
        (
            "dedup (hash every binary)",
            secs,
            base,
            "sha256sum of every binary",
            f"{dupes} duplicates removed",
        )
    )

    shutil.rmtree(args.workdir / "prune-work", ignore_errors=True)
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}; {args.entries} entries; one run each; tcm "
        "timed as a whole process"
    )
    for name, secs, base, base_name, what in rows:
        print(
            f"  {name:<26} tcm {secs:6.2f} s   baseline {base:6.2f} s ({base_name})   "
            f"ratio {secs / base:4.1f}x   [{what}]"
        )


if __name__ == "__main__":
    main()
