"""GPU proof for warming.

    PYTHONPATH=. python bench/gpu_proof_warm.py [--workdir /tmp/tcm-warm] [--skip-torch]

1. `tcm warm --backend triton` for cuda:90 with the GPU hidden (CUDA_VISIBLE_DEVICES=), then
   the tutorial kernel set launched for real on the GPU (autotuning included) against that
   cache: hits over lookups, counted by Triton's cache manager.
2. `tcm warm --backend torch --model opt-125m` twice into one Inductor dir: the first forward
   cold, then with the warmed cache (each in a fresh process).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_proof_prune import pythonpath  # noqa: E402


def run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": pythonpath(), **env},
    )
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/tcm-warm"))
    ap.add_argument("--skip-torch", action="store_true")
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    os.environ["TCM_DB"] = str(args.workdir / "index.db")
    tcm = [sys.executable, "-m", "tcmtasks.cli"]
    kernels = str(REPO / "tcmtasks" / "data" / "kernels" / "tutorials.py")
    cache = args.workdir / "triton-cache"
    warm = json.loads(
        run(
            [
                *tcm,
                "warm",
                "--backend",
                "triton",
                "--kernels",
                kernels,
                "--target",
                "cuda:90",
                "-o",
                str(cache),
                "--json",
            ],
            CUDA_VISIBLE_DEVICES="",
        ).stdout
    )
    events = args.workdir / "events.log"
    launch = run(
        [sys.executable, "-m", "tcmtasks.warm.run_kernelset", kernels],
        TRITON_CACHE_DIR=str(cache),
        TCM_TEST_EVENTS=str(events),
        TRITON_CACHE_MANAGER="tests.support.counting_cache:CountingCacheManager",
    )
    counts = {"hit": 0, "miss": 0, "store": 0}
    for line in events.read_text().splitlines():
        counts[json.loads(line)["event"]] += 1
    summary: dict = {
        "triton_backend": {
            "variants_warmed": warm["variants"],
            "warm_seconds": warm["seconds"],
            "gpu_hidden": True,
            "real_run": json.loads(launch.stdout),
            "lookups": counts["hit"] + counts["miss"],
            **counts,
        },
    }
    if not args.skip_torch:
        ind = args.workdir / "inductor"
        runs = []
        for _ in range(2):
            out = json.loads(
                run(
                    [
                        *tcm,
                        "warm",
                        "--backend",
                        "torch",
                        "--model",
                        "opt-125m",
                        "-o",
                        str(ind),
                        "--json",
                    ]
                ).stdout
            )
            runs.append(out["runs"][0]["first_forward_s"])
        summary["torch_backend"] = {
            "model": "opt-125m",
            "batch": 1,
            "seq": 128,
            "dtype": "fp16",
            "first_forward_cold_s": runs[0],
            "first_forward_warm_s": runs[1],
            "triton_entries": sum(1 for _ in ind.glob("triton/*/*")),
        }
    print(json.dumps(summary, indent=2))
    t = summary["triton_backend"]
    ok = t["miss"] == 0 and t["hit"] == t["lookups"] > 0
    print("PROOF", "PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
