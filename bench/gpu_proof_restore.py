"""GPU proof for restoring: a cache written by real launches is packaged, restored into a fresh
directory with `tcm pull`, and the same workload then runs with every lookup a hit.

    PYTHONPATH=. python bench/gpu_proof_restore.py [--workdir /tmp/tcm-restore]

First-run times are whole processes (Python, torch and Triton start-up included), cold vs
restored; the restore's own time (tcm pull as a process) is reported beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_proof_prune import pythonpath, workload  # noqa: E402


def tcm(*args: str) -> tuple[float, dict]:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tcmtasks.cli", *args, "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": pythonpath()},
    )
    if proc.returncode:
        raise SystemExit(f"tcm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - t, json.loads(proc.stdout)


def timed_workload(cache: Path, events: Path) -> dict:
    t = time.perf_counter()
    result = workload(cache, events)
    return {**result, "process_seconds": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/tcm-restore"))
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.environ["TCM_DB"] = str(args.workdir / "index.db")
    built = args.workdir / "built-cache"
    cold = timed_workload(built, args.workdir / "cold.log")
    pack_s, packed = tcm("package", str(built), f"oci:{args.workdir / 'image'}:v1")
    _, gpu = tcm("gpu")
    restored = args.workdir / "node" / "triton-cache"
    pull_s, report = tcm("pull", f"oci:{args.workdir / 'image'}:v1", "-c", str(restored))
    warm = timed_workload(restored, args.workdir / "warm.log")
    summary = {
        "host": gpu,
        "cold": cold,
        "package_seconds": pack_s,
        "image_digest": packed["digest"],
        "entries_packaged": packed["entries"],
        "pull_seconds": pull_s,
        "kept": len(report["kept"]),
        "skipped": report["skipped"],
        "restored": warm,
        "cold_first_run_s": cold["process_seconds"],
        "restored_first_run_plus_pull_s": warm["process_seconds"] + pull_s,
    }
    print(json.dumps(summary, indent=2))
    ok = (
        warm["hit"] == warm["launches"] == cold["store"]
        and warm["miss"] == 0
        and warm["store"] == 0
        and warm["max_err"] < 1e-2
    )
    print("PROOF", "PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
