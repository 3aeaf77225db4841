"""The warm backends' child processes: one way to start them and one way back for results
and errors, shared by the triton and torch backends.

A backend compiles in a fresh interpreter (``python -m tcmtasks.warm.<backend>``) so that the
compiler starts with the caches pointed at the output and nothing it loads (a stand-in
driver, torch, CUDA state) stays in the tcm process. The child prints one JSON object per
result line on stdout; a TcmError in the child comes back as a ``tcm-error:`` line on stderr
and is raised again in the parent as the same class, so the exit code survives the hop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import errors
from ..errors import TcmError, ToolFailed

ERROR_PREFIX = "tcm-error: "
#: The dir holding the tcmtasks package: put on the child's path, so a checkout that is not
#: installed works as well as an installed one.
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


def inductor_env(inductor_dir: Path) -> dict[str, str]:
    """This environment with Inductor's cache at ``inductor_dir``, and no TRITON_CACHE_DIR:
    Inductor then keeps Triton's kernels inside its own dir (``triton/<device>``)."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(inductor_dir.resolve())}
    env.pop("TRITON_CACHE_DIR", None)
    return env


def run_child(
    module: str,
    args: list[str],
    env: dict[str, str],
    *,
    what: str,
    extra_path: str = "",
    python: str | None = None,
) -> list[dict[str, Any]]:
    """Run ``python -m module args`` with ``env`` (tcm's interpreter, or the workload's
    ``python``: its Triton then computes the keys); return its JSON result lines."""
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (PACKAGE_PARENT, extra_path, env.get("PYTHONPATH", "")) if p
    )
    proc = subprocess.run(
        [python or sys.executable, "-m", module, *args], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise _error_from(proc.stderr, what)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def child_main(body: Callable[[], None]) -> None:
    """Run a child's ``body``; report a TcmError to the parent and exit 2."""
    try:
        body()
    except TcmError as exc:
        record = {"class": type(exc).__name__, "message": str(exc)}
        print(ERROR_PREFIX + json.dumps(record), file=sys.stderr, flush=True)
        sys.exit(2)


def _error_from(stderr: str, what: str) -> TcmError:
    for line in reversed(stderr.splitlines()):
        if line.startswith(ERROR_PREFIX):
            record = json.loads(line[len(ERROR_PREFIX) :])
            cls = getattr(errors, str(record.get("class")), None)
            if not (isinstance(cls, type) and issubclass(cls, TcmError)):
                cls = TcmError
            exc = Exception.__new__(cls)
            Exception.__init__(exc, str(record.get("message")))
            return exc
    return ToolFailed(f"{what} failed:\n{stderr[-3000:]}")
