"""Shared fixtures: real Triton caches compiled on the CPU once per session, handed out as copies.

The session compiles tests/support/kernels.py for cuda:80, cuda:90 and hip:gfx942 through the JIT
launch path with a stand-in driver (docs/cache-formats.md, "Compiling without the GPU"). Tests get
their own copy, with group files pointing at the copy, exactly as if Triton had compiled there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import require_modules

REPO = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
H100_TAR = SHARED_FIXTURES / "triton-3.6.0-cp312-h100-vecadd.tar.gz"
TARGETS = ("cuda:80", "cuda:90", "hip:gfx942")
COUNTING_MANAGER = "tests.support.counting_cache:CountingCacheManager"


def triton_env(
    cache_dir: Path, events: Path | None = None, first: Path | None = None
) -> dict[str, str]:
    """Environment for a child process that compiles into ``cache_dir`` and logs lookups;
    ``first``, a dir searched before all (another path to a Triton)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRITON_", "TCM_"))}
    env["TRITON_CACHE_DIR"] = str(cache_dir)
    env["TRITON_CACHE_MANAGER"] = COUNTING_MANAGER
    path = [*([str(first)] if first else []), str(REPO), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(path).rstrip(os.pathsep)
    if events is not None:
        env["TCM_TEST_EVENTS"] = str(events)
    return env


def compile_kernels(
    cache_dir: Path,
    targets=TARGETS,
    events: Path | None = None,
    first: Path | None = None,
    python: str = sys.executable,
) -> list[dict]:
    """Compile the test kernel set for ``targets`` into ``cache_dir`` in a fresh process (of
    ``python``: another interpreter's Triton)."""
    proc = subprocess.run(
        [python, "-m", "tests.support.compile_kernels", *targets],
        env=triton_env(cache_dir, events, first),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def lookups(events: Path) -> dict[str, int]:
    """Counts of hit / miss / store events logged by the counting cache manager."""
    counts = {"hit": 0, "miss": 0, "store": 0}
    if events.exists():
        for line in events.read_text().splitlines():
            counts[json.loads(line)["event"]] += 1
    return counts


def honouring_file_modes(cmd: list[str]) -> list[str]:
    """Run ``cmd`` so that file permission bits apply: root ignores them, so as root drop the
    DAC override capabilities from the bounding set (the process stays uid 0, so it can still
    reach the checkout wherever it lies)."""
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]


def relocate_copy(src: Path, dst: Path) -> Path:
    """Copy a cache and point its groups at the copy: the cache Triton would have written had
    it compiled at ``dst``. Done textually here, independent of the code under test."""
    shutil.copytree(src, dst, symlinks=True)
    for grp in dst.glob("*/__grp__*.json"):
        data = json.loads(grp.read_text())
        data["child_paths"] = {
            c: p.replace(str(src), str(dst), 1) for c, p in data["child_paths"].items()
        }
        grp.write_text(json.dumps(data))
    return dst


@pytest.fixture(scope="session")
def compiled_cache(tmp_path_factory) -> tuple[Path, list[dict]]:
    require_modules("triton")
    root = tmp_path_factory.mktemp("session") / "cache"
    compiled = compile_kernels(root)
    assert len(compiled) == 3 * len(TARGETS)
    return root, compiled


@pytest.fixture
def cache(compiled_cache, tmp_path) -> Path:
    """A private copy of the session's real cache (9 kernels over 3 targets)."""
    return relocate_copy(compiled_cache[0], tmp_path / "cache")


@pytest.fixture
def h100_cache(tmp_path) -> Path:
    """The cache written by a real H100 run; groups still point at /tmp/tc1 as Triton wrote."""
    if not H100_TAR.exists():
        pytest.skip(f"{H100_TAR} is not present")
    with tarfile.open(H100_TAR) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "tc1"


@pytest.fixture(scope="session")
def tracked_cold_warm(tmp_path_factory) -> tuple[Path, dict]:
    """A real Inductor cache made once per session by torch.compile of a tiny model on the CPU:
    ``tcm warm --backend command --inductor`` run under ``tcm track --require-hits``. Returns
    the dir and tcm track's report of that cold run."""
    require_modules("torch")
    out = tmp_path_factory.mktemp("warm") / "inductor"
    home = out.parent / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRITON_", "TCM_", "TORCHINDUCTOR_", "VLLM_", "TORCH_"))
    }
    env.update(HOME=str(home), TCM_DB=str(home / "i.db"), PYTHONPATH=str(REPO))
    tcm = [sys.executable, "-m", "tcmtasks.cli"]
    proc = subprocess.run(
        [*tcm, "track", "--require-hits", "--json", "--", *tcm, "warm", "--backend", "command",
         "--inductor", "-o", str(out), "--", sys.executable, "-m", "tests.support.tiny_model"],
        env=env, capture_output=True, text=True, timeout=900, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]  # it compiled: refused
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out / "fxgraph").is_dir() and (out / "aotautograd").is_dir()
    return out, report


@pytest.fixture(scope="session")
def warmed_inductor(tracked_cold_warm) -> Path:
    return tracked_cold_warm[0]


@dataclass
class FleetWarm:
    """A GPU-less warm of tiny-opt for two GPUs (tests/support/profiles.py)."""

    out: Path  # the fleet dir: one Inductor cache per GPU
    result: Any  # ops.WarmResult
    profiles: dict[str, Path]  # "h100"/"h200" -> the re-targeted profile
    python: str  # the CUDA torch interpreter that compiled


@pytest.fixture(scope="session")
def fleet_warm(tmp_path_factory) -> FleetWarm:
    """The shipped H100 and H200 profiles, re-targeted at the CUDA torch under test, warmed
    in one run on this GPU-less machine (one compile per GPU, ~25 s)."""
    from tcmtasks import ops
    from tests.support.profiles import H100, H200, profile_for, runtime_of
    from tests.support.tools import require_cuda_python

    python = require_cuda_python()
    rt = runtime_of(python)
    assert rt["cuda"] and not rt["available"], "these tests need CUDA torch and no GPU"
    base = tmp_path_factory.mktemp("fleet")
    profiles = {
        "h100": profile_for(rt, base / "h100.json", H100),
        "h200": profile_for(rt, base / "h200.json", H200),
    }
    out = base / "warm"
    result = ops.warm(
        ops.TorchWarm("tiny-opt", python=python, gpu_profiles=list(profiles.values())), out
    )
    return FleetWarm(out, result, profiles, python)


@pytest.fixture
def tiny_fs(tmp_path):
    """A 512 KiB tmpfs: a disk that fills up."""
    where = tmp_path / "tiny"
    where.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(where)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def db(tmp_path, monkeypatch) -> Path:
    """A private index database (TCM_DB), never the user's."""
    path = tmp_path / "index.db"
    monkeypatch.setenv("TCM_DB", str(path))
    return path


@pytest.fixture
def tcm(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRITON_", "TCM_", "TORCHINDUCTOR_", "VLLM_", "XDG_"))
    }
    env.update(
        HOME=str(home),
        TCM_DB=str(tmp_path / "index.db"),
        COLUMNS="200",
        TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "no-inductor"),
        PYTHONPATH=str(REPO),
    )

    def run(*args, ok=True, extra_env=None):
        proc = subprocess.run(
            [sys.executable, "-m", "tcmtasks.cli", *map(str, args)],
            env={**env, **(extra_env or {})},
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        if ok is True:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        elif ok is not None:
            assert proc.returncode == ok, proc.stdout + proc.stderr
        return proc

    run.home = home
    run.env = env
    return run


# The registry fixtures live with the OCI tests; restoring (tests/test_extract.py) needs them too.
from tests.oci.conftest import proxy, start_registry  # noqa: E402, F401
