"""GPU proof for shipping the whole compile cache (issues: whole cache; track at every level).

    PYTHONPATH=. python bench/gpu_proof_whole_cache.py [--workdir /tmp/tcm-whole] [--rounds 3]

On the GPU machine, OPT-125m (bench/opt_forward.py) in fresh processes, driven through
``tcmtasks.ops`` (the calls behind ``tcm warm/track/package/pull/gpu``):

1. cold: an empty Inductor dir, warmed with ``ops.warm(CommandWarm(..., inductor=True))`` (so
   the dir carries its producer record) inside ``ops.track``: it must report the compiles
   (what ``tcm track --require-hits`` refuses with exit 1); the same process saves PyTorch's
   Mega-Cache;
2. ``ops.package`` of that dir, then per round, side by side, in an order rotated each round:
   local warm (the producer's own dir), restored (``ops.pull`` into a fresh dir at another
   path, GPU targets detected), the same restored dir again, the producer's dir copied whole
   to a new path (the best any restore could do), and Mega-Cache (an empty dir plus
   ``load_cache_artifacts``): first-forward time and Inductor's counters for each;
3. one more restore, run inside ``ops.track``: it must have compiled nothing.

Prints every figure as JSON and ``PROOF PASSED`` when the restored runs hit the FX-graph and
AOTAutograd caches with no Triton compile and their median first forward is within 1.2x of the
local warm median.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from opt_forward import hit_both  # noqa: E402 (bench/, the script's dir)

from tcmtasks import ops  # noqa: E402

FORWARD = [sys.executable, str(REPO / "bench" / "opt_forward.py")]
SMOKE = os.environ.get("TCM_BENCH_DEVICE") == "cpu"  # a CPU smoke test: no GPU to select
SCENARIOS = ["local", "restored", "restored_again", "copied", "mega"]


def set_env(inductor: Path | None) -> None:
    for k in [k for k in os.environ if k.startswith(("TORCHINDUCTOR_", "TRITON_CACHE"))]:
        del os.environ[k]
    os.environ["PYTHONPATH"] = str(REPO)
    if inductor is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor)


def forward(inductor: Path, *extra: str) -> dict:
    set_env(inductor)
    t = time.perf_counter()
    proc = subprocess.run([*FORWARD, *extra], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"forward failed:\n{proc.stderr[-4000:]}")
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith("{"))
    return {**json.loads(line), "process_s": time.perf_counter() - t}


def tracked(command: list[str], inductor: Path | None, out: Path) -> tuple[dict, dict]:
    set_env(inductor)
    result = ops.track([*command, "--json-out", str(out)], record=False)
    report = result.to_dict()
    report.pop("kernels", None)
    return json.loads(out.read_text()), report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/tcm-whole"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = ap.parse_args()
    w = args.workdir
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    os.environ["TCM_DB"] = str(w / "index.db")
    producer, mega = w / "producer" / "inductor", w / "mega.bin"
    image = f"oci:{w / 'image'}:v1"

    # 1. cold: warm through the command backend (producer record), tracked
    warm_cmd = [
        sys.executable, "-c",
        "import sys; from pathlib import Path; from tcmtasks import ops; "
        "r = ops.warm(ops.CommandWarm(sys.argv[2:], inductor=True), Path(sys.argv[1])); "
        "sys.exit(r.returncode)",
        str(producer), *FORWARD, "--mega-save", str(mega),
    ]  # fmt: skip
    t = time.perf_counter()
    cold, cold_track = tracked(warm_cmd, None, w / "cold.json")
    cold["process_s"] = time.perf_counter() - t
    # 2. package; rounds of local warm / restored / Mega-Cache, side by side
    set_env(None)
    t = time.perf_counter()
    packed = ops.package(producer, image).to_dict()
    package_s = time.perf_counter() - t
    scenarios = args.scenarios.split(",")
    rows: dict[str, list[dict]] = {k: [] for k in scenarios}
    pulls = []

    def restored(i: int) -> dict:
        node = w / f"node{i}" / "inductor"
        set_env(None)
        t = time.perf_counter()
        report = ops.pull(image, ops.RestoreOptions(inductor_dir=node, all_targets=SMOKE))
        pull_s = time.perf_counter() - t
        pulls.append({"seconds": pull_s, "parts": [p.to_dict() for p in report.parts],
                      "kept": len(report.kept), "skipped": report.skipped})  # fmt: skip
        return {**forward(node), "pull_s": pull_s}

    def copied(i: int) -> dict:
        """The whole dir copied to a new path (cp -a): what any restore can at best match."""
        copy = w / f"copy{i}" / "inductor"
        shutil.copytree(producer, copy, symlinks=True)
        return forward(copy)

    run_one = {
        "local": lambda i: forward(producer),
        "restored": restored,
        "restored_again": lambda i: forward(w / f"node{i}" / "inductor"),
        "copied": copied,
        "mega": lambda i: forward(w / f"mega{i}" / "inductor", "--mega-load", str(mega)),
    }
    for i in range(args.rounds):
        # rotate the order each round, so no scenario always runs first or right after another
        order = scenarios[i % len(scenarios) :] + scenarios[: i % len(scenarios)]
        if "restored_again" in order and order.index("restored_again") < order.index("restored"):
            order.remove("restored_again")
            order.insert(order.index("restored") + 1, "restored_again")
        for name in order:
            rows[name].append({**run_one[name](i), "position": order.index(name)})
    # 3. a restored node, tracked: nothing may compile
    node = w / "tracked-node" / "inductor"
    set_env(None)
    ops.pull(image, ops.RestoreOptions(inductor_dir=node, all_targets=SMOKE))
    restored_run, warm_track = tracked(FORWARD, node, w / "warm.json")

    med = {k: statistics.median(r["first_forward_s"] for r in v) for k, v in rows.items()}
    summary = {
        "host": ops.gpu().to_dict(),
        "cold": cold,
        "cold_track": cold_track,
        "package_seconds": package_s,
        "image": {k: packed.get(k) for k in ("digest", "entries", "layer_size", "parts")},
        "pulls": pulls,
        "rounds": rows,
        "median_first_forward_s": med,
        "restored_over_local": med["restored"] / med["local"],
        "restored_tracked_run": restored_run,
        "restored_track": warm_track,
    }
    print(json.dumps(summary, indent=2))
    hits = all(hit_both(r) for r in rows["restored"])
    ok = (
        hits
        and warm_track["compiled_nothing"]
        and warm_track["misses"] == 0
        and not cold_track["compiled_nothing"]
        and summary["restored_over_local"] <= 1.2
    )
    print("PROOF", "PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
