"""Ask a Triton whether a cache holds the ``cuda_utils`` a node would look up
(tests/support/helper_lookups.py, run in that Triton's interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cuda_utils_lookup(
    python: str, cache: Path, libcuda_dirs: list[str], path: str | None = None
) -> str:
    """What ``python``'s Triton does when it asks for cuda_utils in ``cache`` on a node whose
    ldconfig lists ``libcuda_dirs`` and that cannot compile C: "found" or "missed"."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRITON_", "TCM_"))}
    env.update(TRITON_CACHE_DIR=str(cache), CC="/bin/false",
               TCM_TEST_LIBCUDA_DIRS=":".join(libcuda_dirs), PYTHONPATH=str(REPO),
               PATH=path or env.get("PATH", ""))  # fmt: skip
    proc = subprocess.run(
        [python, "-m", "tests.support.helper_lookups", "none", "cuda:90"],
        env=env, cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return str(json.loads(proc.stdout.strip().splitlines()[-1])["cuda_utils"])
