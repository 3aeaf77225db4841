"""GPU proof (issue: a restored node needs no C compiler), OPT-125m: the image that
`doit warm_and_ship model=opt-125m` made on a CPU-only runner (a GPU-less warm for the shipped
H100 and H200 profiles, with Triton's C helpers), restored here and run where Triton finds no C
compiler: CC unset, no gcc/cc/clang on PATH (only python3 is), a fresh HOME. ``$CXX`` keeps the
machine's value: Inductor hashes it into every graph key (`cpp.cxx`), so dropping it would
make the keys differ, not prove anything about compilers; Triton builds its helpers with CC.

    PYTHONPATH=. python3 bench/gpu_proof_nocc_opt.py --with oci:DIR:TAG --without oci:DIR:TAG2 \
        --out OUT [--rounds 3]

1. the reference: a local warm on this GPU (`tcm warm --backend torch`, a compiler present);
2. rounds in rotated order, each with fresh HOMEs and dirs: (a) `tcm pull` of the image (no
   --gpu: the node's GPU decides), then OPT-125m's first forward without a compiler inside
   `tcm track --require-hits`; (b) the same first forward on a copy of the local warm's own
   cache, with the machine's compiler, inside `tcm track` (no --require-hits: it builds
   cuda_utils in its fresh HOME, which is what a node with only that cache does);
3. control: the image without the helpers, restored the same way: the run must fail with
   Triton's "Failed to find C compiler".

PROOF PASSED when every restored round ran with no compiler, hit the FX-graph and AOTAutograd
caches, and `tcm track --require-hits` passed (no kernel, graph or helper compiled); the
control failed with Triton's message; and the median restored first forward is within 1.05x
of the local one's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FORWARD = [sys.executable, str(REPO / "bench" / "opt_forward.py")]
TCM = [sys.executable, "-m", "tcmtasks.cli"]


def base_env(home: Path, inductor: Path | None = None) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRITON_", "TORCHINDUCTOR_", "XDG_"))}  # fmt: skip
    env.update(HOME=str(home), TCM_DB=str(home / "index.db"),
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))  # fmt: skip
    if inductor is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(inductor)
    return env


def no_compiler(env: dict[str, str], bindir: Path) -> dict[str, str]:
    env = {k: v for k, v in env.items() if k not in ("CC", "CFLAGS", "LDFLAGS")}
    env["PATH"] = str(bindir)
    assert all(shutil.which(c, path=env["PATH"]) is None for c in ("gcc", "cc", "clang"))
    return env


def run(cmd: list[str], env: dict[str, str], timeout: int = 900) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    docs = []
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                docs.append(json.loads(line))
    return {"rc": p.returncode, "seconds": round(time.perf_counter() - t0, 2), "docs": docs,
            "stderr": p.stderr[-3000:]}  # fmt: skip


def tracked_forward(inductor: Path, env: dict[str, str], require: bool) -> dict:
    """OPT-125m's first forward in a fresh process inside ``tcm track``: the forward's own
    figures (first forward, Inductor's counters) and tcm's verdict."""
    cmd = [*TCM, "track", "--json", *(["--require-hits"] if require else []), "--", *FORWARD]
    got = run(cmd, {**env, "TORCHINDUCTOR_CACHE_DIR": str(inductor)})
    fwd = next((d for d in got["docs"] if "first_forward_s" in d), None)
    track = next((d for d in got["docs"] if "verdict" in d), None)
    return {"rc": got["rc"], "seconds": got["seconds"], "forward": fwd,
            "track": {k: (track or {}).get(k) for k in
                      ("verdict", "compiled_nothing", "helper_hits", "helpers_built",
                       "inductor", "lookups", "hits", "misses")},
            "stderr": got["stderr"][-1500:] if got["rc"] else ""}  # fmt: skip


def so_files(root: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _dirs, files in os.walk(root) for f in files if f.endswith(".so")
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--with", dest="with_", required=True)
    ap.add_argument("--without", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    w = Path(tempfile.mkdtemp(prefix="nocc-opt-"))
    bindir = w / "bin"
    bindir.mkdir()
    os.symlink(sys.executable, bindir / "python3")  # the only program on PATH
    r: dict = {"cxx": os.environ.get("CXX"), "cc": os.environ.get("CC")}

    def save() -> None:
        (a.out / "nocc_opt.json").write_text(json.dumps(r, indent=1, default=str))

    local = w / "local" / "inductor"
    warm = run([*TCM, "warm", "--backend", "torch", "--model", "opt-125m", "-o", str(local),
                "--json"], base_env(w / "home-warm"))  # fmt: skip
    r["local_warm"] = {
        "rc": warm["rc"],
        "seconds": warm["seconds"],
        "stderr": warm["stderr"],
        "helpers": [
            x.get("helpers") for x in (warm["docs"][-1] if warm["docs"] else {}).get("runs", [])
        ],
    }
    r["local_warm_so"] = so_files(w / "local")
    save()
    rows: dict[str, list[dict]] = {"restored": [], "local": []}
    for i in range(a.rounds):
        order = ["local", "restored"] if i % 2 == 0 else ["restored", "local"]
        for name in order:
            home = w / f"home-{name}{i}"
            if name == "restored":
                node = w / f"node{i}" / "inductor"
                pulled = run([*TCM, "pull", a.with_, "--inductor-dir", str(node), "--json"],
                             base_env(home))  # fmt: skip
                env = no_compiler(base_env(home), bindir)
                got = tracked_forward(node, env, require=True)
                got["pull"] = {
                    "rc": pulled["rc"],
                    "seconds": pulled["seconds"],
                    "stderr": pulled["stderr"][-800:] if pulled["rc"] else "",
                }
                got["so_in_home"] = so_files(home)
            else:
                copy = w / f"local{i}" / "inductor"
                shutil.copytree(local, copy, symlinks=True)
                got = tracked_forward(copy, base_env(home), require=False)
            rows[name].append(got)
            save()
    r["rounds"] = rows
    home = w / "home-control"
    node = w / "control" / "inductor"
    pulled = run([*TCM, "pull", a.without, "--inductor-dir", str(node), "--json"], base_env(home))
    control = tracked_forward(node, no_compiler(base_env(home), bindir), require=True)
    control["pull_rc"] = pulled["rc"]
    r["control"] = control
    firsts = {k: [x["forward"]["first_forward_s"] for x in v if x.get("forward")]
              for k, v in rows.items()}  # fmt: skip
    med = {k: statistics.median(v) if v else None for k, v in firsts.items()}
    r["first_forward_s"] = firsts
    r["median_first_forward_s"] = med
    ratio = med["restored"] / med["local"] if med["restored"] and med["local"] else None
    r["restored_over_local"] = ratio
    checks = []
    for i, x in enumerate(rows["restored"]):
        fwd, t = x.get("forward") or {}, x["track"]
        hit = (fwd.get("inductor", {}).get("fxgraph_cache_hit", 0) >= 1
               and not fwd.get("inductor", {}).get("fxgraph_cache_miss")
               and fwd.get("aot_autograd", {}).get("autograd_cache_hit", 0) >= 1)  # fmt: skip
        checks.append((f"round {i}: pull rc {x['pull']['rc']}, run rc {x['rc']} with no "
                       "compiler", x["pull"]["rc"] == 0 and x["rc"] == 0))  # fmt: skip
        checks.append((f"round {i}: FX-graph and AOTAutograd hit", hit))
        checks.append(
            (
                f"round {i}: {t['verdict']}; helper hits {t['helper_hits']}, built "
                f"{t['helpers_built']}",
                bool(t["compiled_nothing"]) and (t["helper_hits"] or 0) >= 1,
            )
        )
    checks.append((f"control: fails, rc {control['rc']}", control["rc"] != 0))
    checks.append(("control: Triton's 'Failed to find C compiler'",
                   "Failed to find C compiler" in control["stderr"]))  # fmt: skip
    checks.append((f"first forward restored/local {med['restored']}/{med['local']} = {ratio}",
                   ratio is not None and ratio <= 1.05))  # fmt: skip
    r["checks"] = {what: ok for what, ok in checks}
    save()
    for what, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    print("local warm's helpers:", json.dumps(r["local_warm"]["helpers"]), r["local_warm_so"])
    print("restored HOME's modules:", rows["restored"][0].get("so_in_home"))
    print("local rounds' tracks:", json.dumps([x["track"] for x in rows["local"]]))
    print("PROOF PASSED" if all(ok for _, ok in checks) else "PROOF FAILED")


if __name__ == "__main__":
    main()
