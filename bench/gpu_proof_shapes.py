"""GPU proof for issue 28 (warm what a server compiles), run on the GPU machine:

    PYTHONPATH=. python bench/gpu_proof_shapes.py --out OUT [--part any|dynamic|script]
        [--model tiny-opt|opt-125m] [--profile FILE]

Every warm runs without the GPU (the driver's libraries hidden in a mount namespace,
``CUDA_VISIBLE_DEVICES=``; bench/gpu_proof_gpuless.py ``tcm(hidden=True)``) for this GPU's
profile; the cache is packaged and pulled into a fresh dir with a fresh HOME, as a node does;
each node run is ``tcm track --require-hits`` (exit 0: nothing compiled, Triton's C helpers
included) with Inductor's own counters beside:

* ``any``: ``tcm warm --backend torch --any-order --batch 1,2,8 --seq 128`` (6 processes);
  node runs call 8x128, 1x128, 2x128, 4x128 and 2x128, 8x128, 1x128, 4x128 (two other
  orders, and 4x128, a shape between);
* ``dynamic``: ``--dynamic --batch 1,2,8`` (torch.compile(dynamic=True), one process); the
  node runs the same two orders with dynamic=True;
* ``script``: bench/warmup_script.py (from_pretrained of a model saved here with random
  weights, batch marked dynamic) warmed through ``tcm warm --backend command --gpu-profile``
  calling 2x128, 8x128; the node runs the same script, with the weights, calling 8x128, 4x128,
  2x128.

Writes OUT/shapes-<part>-<model>.json and prints ``PROOF PASSED`` when every node run passed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from gpu_proof_fleet import fresh_env  # noqa: E402
from gpu_proof_gpuless import clean_env, tcm  # noqa: E402

from tcmtasks.resources import model_dir  # noqa: E402

FORWARD = [sys.executable, str(REPO / "bench" / "opt_forward.py")]
SCRIPT = [sys.executable, str(REPO / "bench" / "warmup_script.py")]  # [0]: --python
ORDERS = [["--batch", "8", "--then", "1x128,2x128,4x128"],
          ["--batch", "2", "--then", "8x128,1x128,4x128"]]  # fmt: skip


DIAG: dict[str, str] = {}  # --diag: bench/launcherdiag on the path


def diag_env(env: dict[str, str], log: Path) -> dict[str, str]:
    if not DIAG:
        return env
    path = f"{REPO / 'bench' / 'launcherdiag'}:{env.get('PYTHONPATH', '')}"
    return {**env, "PYTHONPATH": path, "TCM_DIAG_LOG": str(log)}


def node_run(image: str, w: Path, name: str, command: list[str]) -> dict:
    """Pull ``image`` as a node (fresh HOME, fresh Inductor dir), then ``command`` inside
    ``tcm track --require-hits``."""
    home, inductor = w / f"home-{name}", w / f"node-{name}"
    t = time.perf_counter()
    pulled = tcm(["pull", image, "--inductor-dir", str(inductor)], fresh_env(home))
    pull_s = time.perf_counter() - t
    proc = subprocess.run(
        [sys.executable, "-m", "tcmtasks.cli", "track", "--require-hits", "--json", "--",
         *command],
        env=diag_env(fresh_env(home, inductor), w / f"diag-{name}.log"), capture_output=True,
        text=True,
    )  # fmt: skip
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    counters = json.loads(lines[-2]) if len(lines) > 1 else {}
    return {
        "command": " ".join(command[1:]), "exit": proc.returncode, "pull_s": pull_s,
        "pulled": {k: pulled.get(k) for k in ("installed", "skipped", "gpus") if k in pulled},
        "verdict": report.get("verdict"), "inductor": report.get("inductor"),
        "helpers_built": report.get("helpers_built"), "helper_dirs": report.get("helper_dirs"),
        "helper_hits": report.get("helper_hits"), "counters": counters,
        "stderr": proc.stderr[-1500:] if proc.returncode else "",
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--part", choices=["any", "dynamic", "script"], required=True)
    ap.add_argument("--model", default="opt-125m")
    ap.add_argument("--profile", type=Path, help="this GPU's profile (else recorded here)")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--python", default=sys.executable, help="the workload's interpreter")
    ap.add_argument("--diag", action="store_true", help="log launchers (bench/launcherdiag)")
    a = ap.parse_args()
    if a.diag:
        DIAG["on"] = "1"
    FORWARD[0] = SCRIPT[0] = a.python
    w = a.workdir or Path(f"/tmp/tcm-shapes-{a.part}-{a.model}")
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    a.out.mkdir(parents=True, exist_ok=True)
    profile = a.profile or w / "gpu.json"
    r: dict = {"part": a.part, "model": a.model}
    if a.profile is None:
        r["profile"] = tcm(["gpu", "--save-profile", str(profile)], clean_env())
    cache = w / "warm"
    if a.part in ("any", "dynamic"):
        how = ["--any-order"] if a.part == "any" else ["--dynamic"]
        warm = ["warm", "--backend", "torch", "--model", a.model, *how, "--batch", "1,2,8",
                "--seq", "128", "--gpu-profile", str(profile), "-o", str(cache), "--python",
                a.python]  # fmt: skip
        node = [[*FORWARD, "--model", str(model_dir(a.model)), *order,
                 *(["--dynamic"] if a.part == "dynamic" else [])] for order in ORDERS]  # fmt: skip
    else:
        saved = w / "model"
        subprocess.run([*SCRIPT, str(saved), "--save-from", str(model_dir(a.model))], check=True)
        warm = ["warm", "--backend", "command", "--gpu-profile", str(profile), "-o",
                str(cache), "--", *SCRIPT, str(saved), "--shapes", "2x128,8x128", "--mark",
                "batch"]  # fmt: skip
        node = [[*SCRIPT, str(saved), "--shapes", "8x128,4x128,2x128", "--mark", "batch"]]
    t = time.perf_counter()
    r["warm"] = tcm(warm, diag_env(clean_env(), w / "diag-warm.log"), hidden=True)
    r["warm_s"] = time.perf_counter() - t
    image = f"oci:{w / 'image'}:shapes"
    r["package"] = tcm(["package", str(cache), image], clean_env())
    r["node_runs"] = [node_run(image, w, f"n{i}", cmd) for i, cmd in enumerate(node)]
    r["passed"] = all(n["exit"] == 0 for n in r["node_runs"])
    for log in w.glob("diag-*.log"):
        shutil.copy(log, a.out / f"{a.part}-{a.model}-{log.name}")
    (a.out / f"shapes-{a.part}-{a.model}.json").write_text(json.dumps(r, indent=1, default=str))
    for n in r["node_runs"]:
        print(a.part, a.model, n["command"], "exit", n["exit"], n["verdict"])
    print("PROOF PASSED" if r["passed"] else "PROOF FAILED")


if __name__ == "__main__":
    main()
