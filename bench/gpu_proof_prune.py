"""GPU proof for prune/dedup: a cache written by real launches, IR-pruned (with asm and source)
and deduplicated, is still hit by the same launches. Run on the GPU machine:

    PYTHONPATH=. python bench/gpu_proof_prune.py [--workdir /tmp/tcm-gpu]

Hits, misses and stores are Triton's own lookups, seen by a counting cache manager.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.variants import age, edit_metadata, kernel_dirs, rekey  # noqa: E402


def pythonpath() -> str:
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


def workload(cache: Path, events: Path) -> dict:
    env = {
        **os.environ,
        "TRITON_CACHE_DIR": str(cache),
        "TCM_TEST_EVENTS": str(events),
        "TRITON_CACHE_MANAGER": "tests.support.counting_cache:CountingCacheManager",
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_workload.py")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    counts = {"hit": 0, "miss": 0, "store": 0}
    for line in events.read_text().splitlines() if events.exists() else []:
        counts[json.loads(line)["event"]] += 1
    return {**result, **counts}


def tcm(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "tcmtasks.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": pythonpath()},
    )
    if proc.returncode != 0:
        raise SystemExit(f"tcm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout) if "--json" in args else {"out": proc.stdout}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/tcm-gpu"))
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    cache = args.workdir / "cache"
    os.environ["TCM_DB"] = str(args.workdir / "index.db")

    cold = workload(cache, args.workdir / "cold.log")
    print("cold:", json.dumps(cold))
    for d in cache.iterdir():
        age(d, 2 * 3600)
    # an older build's leftovers: the same kernels and binaries under other keys, older
    clones = 0
    for d in kernel_dirs(cache)[:6]:
        key = base64.b32encode(secrets.token_bytes(32)).decode().rstrip("=")
        copy = rekey(shutil.copytree(d, cache / key), key)
        edit_metadata(copy, lambda m: m.update(triton_version="3.5.1"))
        age(copy, 3 * 3600)
        clones += 1
    before = tcm("list", "-c", str(cache), "--all", "--json")
    ir = tcm("prune", "-c", str(cache), "--asm", "--source", "-y", "--json")
    dedup = tcm("prune", "-c", str(cache), "--dedup", "-y", "--json")
    doctor = tcm("doctor", "-c", str(cache))
    after = tcm("list", "-c", str(cache), "--all", "--json")
    warm = workload(cache, args.workdir / "warm.log")
    summary = {
        "gpu": subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        ).stdout.strip(),
        "entries_before": len(before),
        "bytes_before": sum(e["size"] for e in before),
        "ir_pruned_entries": ir["result"]["done"],
        "ir_freed": ir["result"]["freed"],
        "clones_added": clones,
        "dedup_removed": dedup["result"]["done"],
        "entries_after": len(after),
        "bytes_after": sum(e["size"] for e in after),
        "doctor": doctor["out"].strip().splitlines()[-1],
        "cold": cold,
        "warm": warm,
    }
    print(json.dumps(summary, indent=2))
    ok = (
        warm["hit"] == cold["store"] == warm["launches"]
        and warm["miss"] == 0
        and warm["store"] == 0
        and warm["max_err"] < 1e-2
        and dedup["result"]["done"] == clones
    )
    print("PROOF", "PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
