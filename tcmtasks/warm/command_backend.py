"""``tcm warm --backend command``: run any command with its compile caches pointed at the
output: Triton's (``TRITON_CACHE_DIR``) by default; with ``inductor`` the output is the
workload's whole Inductor cache (``TORCHINDUCTOR_CACHE_DIR``, Triton's kernels in its
``triton/<device>`` dirs); with ``vllm`` its vLLM cache root (``VLLM_CACHE_ROOT``).

Triton's C helpers come with the run: with a GPU the command builds them itself. Under
``inductor`` a torch.compile process builds ``cuda_utils`` in Triton's default cache
(``$TRITON_HOME/.triton/cache``) before Inductor points Triton at its own dir
(warm/torch_backend.py ``_helpers``): the command gets a ``TRITON_HOME`` of its own, and the
helpers it left there join the output's ``triton/0``, from where a restore places
``cuda_utils`` in the node's plain Triton cache as well."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .. import fleet
from ..cache.entries import EntryKind, iter_dirs, scan_root
from ..cache.roots import discover
from ..errors import UsageError
from ..fleet import Member
from ..gpuprofile import find, fleet_mismatch, load_fleet, runtime_of
from ..targets import host_gpus
from .child import inductor_env, run_child
from .helpers import split_report


def _keys(out: Path) -> set[str]:
    """Every entry name in the Triton roots at or under ``out``."""
    return {
        f"{r.path.name}/{name}" if r.path != out else name
        for r in discover([out])
        if r.path.is_dir()
        for name, _st, _err in iter_dirs(r.path)
    }


def run_command(
    command: list[str],
    out: Path,
    *,
    inductor: bool = False,
    vllm: bool = False,
    gpu_profiles: list[str | Path] | None = None,
) -> dict[str, Any]:
    """Run ``command`` with its caches in ``out``; report the Triton entries that are new since
    the start (what was there before is not this warm's). With ``gpu_profiles`` the command
    is the workload's ``python script`` (or ``python -m module``), run for each GPU of a fleet
    into ``out/<gpu>/`` (its Inductor cache): on the GPU where it is this machine's, else
    without it (script_gpuless.py)."""
    if not command:
        raise UsageError(
            "give the command after --, e.g. tcm warm --backend command -o DIR -- python serve.py"
        )
    if inductor and vllm:
        raise UsageError("--inductor and --vllm name different caches: pick one")
    if gpu_profiles:
        if vllm:
            raise UsageError(
                "--gpu-profile warms a torch.compile script's Inductor cache, not vLLM's: warm "
                "vLLM on its GPU (--backend vllm)"
            )
        return _run_for_fleet(command, out, gpu_profiles)
    return _run(command, out, inductor=inductor, vllm=vllm)


def script_python(command: list[str]) -> str:
    """The interpreter of ``python script.py ARGS`` / ``python -m module ARGS``, or one line on
    why a GPU-less warm cannot run ``command``: it runs the script inside the replay."""
    rest = command[1:]
    if (rest[:1] == ["-m"] and len(rest) > 1) or (rest and rest[0].endswith(".py")):
        return command[0]
    raise UsageError(
        "with --gpu-profile the command is the workload's Python and its warm-up script "
        f"(python warmup.py ARGS, or python -m MODULE ARGS), not {' '.join(command)!r}: "
        "tcm runs the script inside its replay of the GPU"
    )


def _run_for_fleet(command: list[str], out: Path, specs: list[str | Path]) -> dict[str, Any]:
    python = script_python(command)
    profiles = load_fleet(list(specs))
    mismatch = fleet_mismatch(profiles, runtime_of(python), python)
    if mismatch:
        raise UsageError(mismatch)
    local = set(host_gpus()[1])
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    members: list[Member] = []
    said: set[str] = set()
    for spec, profile in zip(specs, profiles, strict=True):
        where = out / profile.slug
        how = "native" if profile.name in local else "gpu-less"
        if how == "native":  # its own GPU is here: the script runs as on a node
            run = _run(command, where, inductor=True)
            if run["returncode"]:
                return {**run, "members": members}
            runs.append({"gpu": profile.name, "how": how, "helpers": run["helpers"]})
        else:
            where.mkdir(parents=True, exist_ok=True)
            env = inductor_env(where)
            env["CUDA_VISIBLE_DEVICES"] = ""
            target = ["--gpu-profile", str(find(spec)), "--", *command[1:]]
            found, helpers = split_report(
                run_child("tcmtasks.warm.script_gpuless", target, env, python=python,
                          what=f"the warm-up script for {profile.name}"),
                said=said,
            )  # fmt: skip
            runs += [{**r, "how": how, "helpers": helpers} for r in found]
        members.append(fleet.member(profile, how, spec))
    fleet.write(out, members)
    return {"returncode": 0, "script": " ".join(command[1:]), "runs": runs, "members": members}


def _run(command: list[str], out: Path, *, inductor: bool, vllm: bool = False) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    before = _keys(root)
    env = inductor_env(root) if inductor else dict(os.environ)
    if vllm:
        env.pop("TRITON_CACHE_DIR", None)
        env["VLLM_CACHE_ROOT"] = str(root)
    elif not inductor:
        env["TRITON_CACHE_DIR"] = str(root)
    with tempfile.TemporaryDirectory(prefix="tcm-triton-home-") as home:
        if inductor:
            env["TRITON_HOME"] = home
        try:
            rc = subprocess.run(command, env=env).returncode
        except FileNotFoundError:
            raise UsageError(f"command not found: {command[0]}") from None
        helpers = _adopt_helpers(Path(home) / ".triton" / "cache", root / "triton" / "0")
    new = sorted(_keys(root) - before)
    return {
        "returncode": rc,
        "new_entries": len(new),
        "new_keys": new,
        "existing_entries": len(before),
        "helpers": helpers,
    }


def _adopt_helpers(default_cache: Path, triton_dir: Path) -> list[str]:
    """Move the C helper modules the command built in Triton's default cache into the
    output's Triton dir (the rest there is not the warm's output); their names."""
    if not default_cache.is_dir():
        return []
    adopted = []
    for entry in scan_root(default_cache):
        if entry.kind != EntryKind.MODULE or (triton_dir / entry.key).exists():
            continue
        triton_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(str(entry.path), str(triton_dir / entry.key))
        adopted.append(str(entry.name))
    return sorted(adopted)
