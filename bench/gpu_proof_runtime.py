"""GPU proof for restoring for the workload's runtime (issue: restore for the workload's
runtime): an image warmed on a CPU machine for two Pythons restores, for the workload's
interpreter, only that interpreter's entries, and the real launches then compile nothing.

    PYTHONPATH=. python bench/gpu_proof_runtime.py IMAGE_REF [--workdir /tmp/tcm-runtime]

IMAGE_REF was made on the CPU machine with
``tcm warm --kernels tutorials --target cuda:90 -o w311`` (tcm's Python 3.11),
``tcm warm ... -o w312 --python python3.12`` and ``tcm package w311 w312 IMAGE_REF``.
Here: ``ops.pull(IMAGE_REF, ops.RestoreOptions(python=sys.executable))``, then the tutorial
kernel set launched for real (``tcmtasks.warm.run_kernelset``) inside ``ops.track``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tcmtasks import ops  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("image")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/tcm-runtime"))
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    os.environ["TCM_DB"] = str(args.workdir / "index.db")
    node = args.workdir / "triton-cache"
    report = ops.pull(args.image, ops.RestoreOptions(cache_dir=node, python=sys.executable))
    os.environ["PYTHONPATH"] = str(REPO)
    run = ops.track(
        [sys.executable, "-m", "tcmtasks.warm.run_kernelset", "tutorials"],
        cache_dir=node,
        record=False,
    )
    stats = run.to_dict()
    stats.pop("kernels", None)
    summary = {
        "runtime": report.runtime,
        "kept": len(report.kept),
        "kept_python": sorted({str(k.get("key"))[:8] for k in report.kept}),
        "skipped": report.skip_reasons(),
        "track": stats,
    }
    print(json.dumps(summary, indent=2))
    ok = (
        len(report.kept) > 0
        and all("cp311" in r for r, _n in report.skip_reasons())
        and run.returncode == 0
        and run.stats.compiled_nothing
        and run.stats.hits == len(report.kept)
    )
    print("PROOF", "PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
