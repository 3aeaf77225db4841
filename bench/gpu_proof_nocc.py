"""GPU proof (issue: a restored node needs no C compiler): the tutorials kernel set, warmed on a
CPU-only machine with Triton's C helpers (cuda_utils, a launcher per signature, built against
tcm's libcuda stub), restored on the GPU machine and run where there is no C compiler at all:
no CC, no gcc/cc/clang on PATH, a fresh HOME. Control: the same image without the helpers,
where Triton must fail with its own "Failed to find C compiler".

    python3 bench/gpu_proof_nocc.py --with oci:DIR:with-helpers --without oci:DIR:without-helpers \
        --out OUT [--rounds 3]

Also probes where a torch.compile run on this machine puts its helpers (with a compiler), for
the torch backend's turn.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TCM = [sys.executable, "-m", "tcmtasks.cli"]


def no_compiler_env(home: Path, bindir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRITON_", "TORCHINDUCTOR_", "CC", "CXX", "XDG_"))}  # fmt: skip
    env.update(HOME=str(home), PATH=str(bindir), TRITON_CACHE_DIR=str(home / "cache"))
    return env


def run(cmd: list[str], env: dict[str, str], timeout: int = 600) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return {"rc": p.returncode, "seconds": round(time.perf_counter() - t0, 2),
            "stdout": p.stdout[-4000:], "stderr": p.stderr[-4000:]}  # fmt: skip


def one_round(image: str, tag: str, bindir: Path, out: Path) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"nocc-{tag}-"))
    env = no_compiler_env(home, bindir)
    assert all(shutil.which(c, path=env["PATH"]) is None for c in ("gcc", "cc", "clang"))
    got = {"image": image, "home": str(home)}
    got["extract"] = run([*TCM, "extract", image, "-c", str(home / "cache")], env)
    got["modules_installed"] = sorted(
        os.path.basename(p) for p in glob.glob(str(home / "cache" / "*" / "*.so"))
    )
    workload = [sys.executable, "-m", "tcmtasks.warm.run_kernelset", "tutorials"]
    track = [*TCM, "track", "-c", str(home / "cache"), "--require-hits", "--json", "--"]
    got["run"] = run([*track, *workload], env)
    got["track"] = None
    for line in got["run"]["stdout"].splitlines():  # the command's own line, then tcm's
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "verdict" in doc:
            got["track"] = doc
    return got


def torch_probe(out: Path) -> dict:
    """Where a torch.compile run's helpers land (a compiler present, fresh HOME): a cold run,
    then, with every built module removed, a second process on the same caches (an FX-graph
    hit, as on a restored node): what that one rebuilds is what a restore must carry."""
    home = Path(tempfile.mkdtemp(prefix="nocc-probe-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRITON_", "TORCHINDUCTOR_"))}
    env["HOME"] = str(home)
    env["TORCHINDUCTOR_CACHE_DIR"] = str(home / "inductor")
    code = ("import torch, json\nfrom torch._dynamo.utils import counters\n"
            "@torch.compile\ndef f(x, y):\n    return (x.sin() * 2).relu() @ y\n"
            "f(torch.randn(64, 64, device='cuda'), torch.randn(64, 64, device='cuda'))\n"
            "torch.cuda.synchronize()\n"
            "print(json.dumps(dict(counters['inductor'])))\n")  # fmt: skip

    def modules() -> list[str]:
        return sorted(  # os.walk: glob's ** skips dot-dirs such as ~/.triton
            os.path.relpath(os.path.join(d, f), home)
            for d, _dirs, files in os.walk(home) for f in files if f.endswith(".so")
        )  # fmt: skip

    got: dict = {}
    for name in ("cold", "restored"):
        r = run([sys.executable, "-c", code], env)
        got[name] = {"rc": r["rc"], "counters": r["stdout"][-600:],
                     "stderr": r["stderr"][-1500:], "so_files": modules()}  # fmt: skip
        for so in got[name]["so_files"]:
            os.unlink(home / so)
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--with", dest="with_", required=True)
    ap.add_argument("--without", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-probe", action="store_true", help="skip the torch.compile probe")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    bindir = Path(tempfile.mkdtemp(prefix="nocc-bin-"))
    os.symlink(sys.executable, bindir / "python3")  # the only program on PATH
    results = {"with": [one_round(a.with_, f"with{i}", bindir, out) for i in range(a.rounds)],
               "without": one_round(a.without, "without", bindir, out)}  # fmt: skip
    results["torch_probe"] = {} if a.no_probe else torch_probe(out)
    (out / "nocc.json").write_text(json.dumps(results, indent=1))
    checks = []
    for i, r in enumerate(results["with"]):
        t = r["track"] or {}
        checks.append((f"round {i}: extract ok", r["extract"]["rc"] == 0))
        checks.append((f"round {i}: helpers installed ({len(r['modules_installed'])})",
                       len(r["modules_installed"]) == 10))  # fmt: skip
        checks.append((f"round {i}: ran with no compiler, rc {r['run']['rc']}",
                       r["run"]["rc"] == 0))  # fmt: skip
        nothing = bool(t.get("compiled_nothing")) and t.get("helper_hits", 0) >= 2
        checks.append(
            (f"round {i}: {t.get('verdict')}, helper hits {t.get('helper_hits')}", nothing)
        )
    c = results["without"]
    checks.append((f"control: fails, rc {c['run']['rc']}", c["run"]["rc"] != 0))
    checks.append(("control: Triton's 'Failed to find C compiler'",
                   "Failed to find C compiler" in c["run"]["stderr"]))  # fmt: skip
    for what, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    for name, probe in results["torch_probe"].items():
        print(f"torch probe ({name}, rc {probe['rc']}):", json.dumps(probe["so_files"]),
              probe["counters"].strip()[:300])  # fmt: skip
    secs = [r["run"]["seconds"] for r in results["with"]]
    print(f"restored runs (no compiler): {secs} s; control {c['run']['seconds']} s")
    print("PROOF PASSED" if all(ok for _, ok in checks) else "PROOF FAILED")


if __name__ == "__main__":
    main()
