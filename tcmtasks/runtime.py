"""The workload's runtime: the Python, Triton and torch that will look the cache up.

That is often not tcm's own environment (tcm installed with pipx or in a venv of its own, the
workload in a container or another venv), and a key depends on the Triton build and the Python
ABI it runs under (docs/cache-formats.md, "The key"). So a restore asks the workload's
interpreter (``--python``), or takes the Triton version it is told (``--triton``), and only
then falls back to the Triton tcm can import itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .producer import Producer, detect

#: Run in the workload's interpreter: tcm's producer detection, which needs only the standard
#: library (and that interpreter's Triton, if it has one).
PROBE = "import json; from tcmtasks.producer import detect; print(json.dumps(detect().to_dict()))"
PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)


@dataclass
class Runtime:
    producer: Producer
    source: str  # how it was found, for reports: "--python /usr/bin/python3.12", ...

    @property
    def filters(self) -> bool:
        """Whether entries can be selected by version at all."""
        return bool(self.producer.triton_version or self.producer.python)

    def describe(self) -> str:
        p = self.producer
        what = ", ".join(
            x
            for x in (
                f"Triton {p.triton_version}" if p.triton_version else "",
                p.python or "",
                f"torch {p.torch}" if p.torch else "",
            )
            if x
        )
        return f"{what or 'unknown'} ({self.source})"

    def to_dict(self) -> dict[str, Any]:
        return {**self.producer.to_dict(), "source": self.source}


def probe_python(python: str | Path) -> Producer:
    """Ask an interpreter, in a subprocess, for its Triton build, Python ABI and torch."""
    found = Producer.from_dict(ask(python, PROBE))
    if found is None:
        raise UsageError(f"--python {python}: it gave no description")
    return found


def ask(python: str | Path, code: str) -> Any:
    """Run ``code`` (tcmtasks importable, standard library only otherwise) in the interpreter
    ``python``; the JSON its last line prints. Why it could not, as a UsageError."""
    exe = shutil.which(str(python)) or str(python)
    if not os.access(exe, os.X_OK):
        raise UsageError(f"--python {python}: no such interpreter")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (PACKAGE_PARENT, os.environ.get("PYTHONPATH", "")) if p
    )}  # fmt: skip
    try:
        proc = subprocess.run(
            [exe, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"--python {python}: cannot run it ({exc})") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"--python {python}: it failed to describe itself ({last})")
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        raise UsageError(f"--python {python}: it gave no description") from None


def resolve(python: str | Path | None = None, triton: str | None = None) -> Runtime:
    """The runtime to restore for: ``--python``, else ``--triton``, else the Triton tcm
    imports, else unknown (no version filter)."""
    if python is not None and triton is not None:
        raise UsageError("--python and --triton both name the runtime: give one")
    if python is not None:
        return Runtime(probe_python(python), f"--python {python}")
    if triton is not None:
        if not triton[:1].isdigit():
            raise UsageError(f"--triton takes a version such as 3.6.0, not {triton!r}")
        return Runtime(Producer(triton_version=triton), f"--triton {triton}")
    own = detect()
    if own.triton_version:
        return Runtime(own, "tcm's own environment")
    return Runtime(
        Producer(python=None),
        "unknown: no Triton next to tcm and no --python/--triton, so entries are not "
        "selected by version",
    )
