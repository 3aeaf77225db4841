"""GPU proof for the fleet warm (issue: `doit warm_and_ship model=opt-125m` on a CPU-only CI
runner, for every GPU of the fleet). Run once on each GPU kind, with the image made elsewhere:

    PYTHONPATH=. python bench/gpu_proof_fleet.py --image oci:DIR:TAG [--rounds 3] [--out D]

The image is what `doit warm_and_ship model=opt-125m` packaged on a CPU-only machine (no GPU,
Python 3.12, torch 2.11.0+cu130 from PyPI, Triton 3.6.0, transformers 5.17.0): one GPU-less
warm for the H100 and the H200 profiles that ship with tcm. On this GPU:

1. ``tcm gpu``: the node's GPU as nvidia-ml-py names it;
2. the reference: a local warm on this GPU (``tcm warm --backend torch``), whose FX-graph and
   AOTAutograd keys the image's units for this GPU must equal;
3. rounds in rotated order, each with a fresh HOME and fresh dirs: ``tcm pull`` of the image
   with no --gpu (the node's GPU decides): it installs this GPU's units only and skips the
   other GPU's with the reason; then OPT-125m's first forward on the restored dir and on a copy
   of the local warm's, with Inductor's counters;
4. ``tcm track --require-hits`` on a fresh restore: nothing may compile, at any level;
5. the same fleet warmed here (``--gpu-profile nvidia-h100 --gpu-profile nvidia-h200``): this
   GPU's part compiled on it (its graph keys equal the local warm's), the other's without it
   (its graph keys equal what the CPU runner's image holds for that GPU);
6. ``tcm gpu --save-profile`` here: the Inductor settings it records (what the graph keys hash,
   ``$CXX`` among them) equal those of the profile tcm ships for this GPU.

Prints every figure as JSON and ``PROOF PASSED`` when the pull installed this GPU's units and
no other's, the keys are equal (step 5's too), every restored round hit the FX-graph and
AOTAutograd caches, the tracked run compiled nothing, and the restored first forward's median
is within 1.2x of the local warm's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from gpu_proof_gpuless import FORWARD, clean_env, forward, keys, tcm  # noqa: E402
from opt_forward import hit_both  # noqa: E402

from tcmtasks import ops  # noqa: E402
from tcmtasks.gpuprofile import load as load_profile  # noqa: E402
from tcmtasks.gpuprofile import shipped  # noqa: E402

MODEL = "opt-125m"


def fresh_env(home: Path, inductor: Path | None = None) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {**clean_env(inductor), "HOME": str(home), "TCM_DB": str(home / "index.db")}


def pull(image: str, node: Path, home: Path) -> dict:
    """``tcm pull`` as a node runs it: no --gpu, no --target (nvidia-ml-py decides)."""
    return tcm(["pull", image, "--inductor-dir", str(node)], fresh_env(home))


def run_forward(inductor: Path, home: Path) -> dict:
    saved = dict(os.environ)
    os.environ["HOME"] = str(home)  # forward() builds its env from os.environ
    home.mkdir(parents=True, exist_ok=True)
    try:
        return forward(inductor, MODEL)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def tracked_run(inductor: Path, home: Path) -> dict:
    """OPT-125m's first forward inside ``tcm track`` (what --require-hits judges), with a
    fresh HOME and ``inductor`` as the Inductor dir."""
    saved = dict(os.environ)
    os.environ.update(fresh_env(home, inductor))
    try:
        report = ops.track([*FORWARD], record=False).to_dict()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    report["kernels"] = [[k["name"], k.get("hits"), k.get("misses")]
                         for k in report.get("kernels", [])]  # fmt: skip
    return report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True, help="the fleet image: oci:DIR:TAG")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/tcm-fleet"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, help="write the figures here as they come")
    args = ap.parse_args()
    w = args.workdir
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    r: dict = {}

    def save() -> None:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "fleet.json").write_text(json.dumps(r, indent=2, default=str))

    r["gpu"] = tcm(["gpu"], fresh_env(w / "home-gpu"))
    own = r["gpu"]["gpus"][0].split(" x")[0]  # "NVIDIA H200 x2" on a machine of two
    recorded = w / "profile.json"
    tcm(["gpu", "--save-profile", str(recorded)], fresh_env(w / "home-profile"))
    here = load_profile(recorded).inductor_config
    ours = [load_profile(p) for p in shipped().values()]
    (ship,) = [p.inductor_config for p in ours if p.name == own]
    r["profile_settings_differ"] = {k: [ship.get(k), v] for k, v in here.items()
                                    if ship.get(k) != v}  # fmt: skip
    info = ops.inspect(args.image)
    r["image_gpus"] = info.gpus
    (part,) = [p for p in info.parts if p.get("kind") == "inductor"]
    mine = set(part["gpus"].get(own, []))
    others = {g: set(u) - mine for g, u in part["gpus"].items() if g != own}
    save()

    local = w / "local" / "inductor"
    r["local_warm"] = tcm(["warm", "--backend", "torch", "--model", MODEL, "-o", str(local)],
                          fresh_env(w / "home-warm"))  # fmt: skip
    # the same fleet warmed here: this GPU's part on the GPU, the other's without it
    mixed = w / "mixed"
    r["mixed_warm"] = tcm(["warm", "--backend", "torch", "--model", MODEL,
                           "--gpu-profile", "nvidia-h100", "--gpu-profile", "nvidia-h200",
                           "-o", str(mixed)], fresh_env(w / "home-mixed"))  # fmt: skip
    members = json.loads((mixed / ".tcm-fleet.json").read_text())["members"]
    r["mixed_members"] = {m["gpu"]: m["how"] for m in members}
    r["mixed_keys_equal"] = {}
    for m in members:
        got_keys = keys(mixed / m["dir"])
        if m["gpu"] == own:  # compiled on this GPU: as the plain local warm
            want = keys(local)
            same = all(got_keys[k] == want[k] for k in ("fxgraph", "aotautograd"))
        else:  # compiled without its GPU here: as the CPU runner's image says
            units = part["gpus"].get(m["gpu"], [])
            want_graphs = sorted(u.rsplit("/", 1)[1] for u in units
                                 if u.startswith(("fxgraph/", "aotautograd/")))  # fmt: skip
            same = sorted(got_keys["fxgraph"] + got_keys["aotautograd"]) == want_graphs
        r["mixed_keys_equal"][m["gpu"]] = same
    save()
    rows: dict[str, list[dict]] = {"local": [], "restored": []}
    pulls = []
    for i in range(args.rounds):
        node = w / f"node{i}" / "inductor"
        t = time.perf_counter()
        report = pull(args.image, node, w / f"home-pull{i}")
        parts = report["parts"]
        pulls.append({"seconds": time.perf_counter() - t, "gpus": report.get("gpus"),
                      "kept": len(report["kept"]), "skipped": report["skipped"],
                      "parts": parts})  # fmt: skip
        copy = w / f"local{i}" / "inductor"
        shutil.copytree(local, copy, symlinks=True)
        order = ["local", "restored"] if i % 2 == 0 else ["restored", "local"]
        for name in order:
            d = copy if name == "local" else node
            rows[name].append(run_forward(d, w / f"home-{name}{i}"))
        save()
    first_node = w / "node0" / "inductor"
    k_node, k_local = keys(first_node), keys(local)
    r["keys_equal"] = {k: k_node[k] == k_local[k] for k in ("fxgraph", "aotautograd", "triton")}
    r["keys"] = {"restored": k_node, "local": k_local}
    installed = {
        str(p.relative_to(first_node)) for p in first_node.rglob("*") if p.is_file()
    }  # the units this node got, by path
    got = {u for u in mine if any(f == u or f.startswith(u + "/") for f in installed)}
    foreign = {g: {u for u in units if any(f == u or f.startswith(u + "/") for f in installed)}
               for g, units in others.items()}  # fmt: skip
    r["units"] = {"own_gpu": own, "image_units_for_it": len(mine), "installed": len(got),
                  "other_gpus_units": {g: len(u) for g, u in others.items()},
                  "other_gpus_installed": {g: len(u) for g, u in foreign.items()}}  # fmt: skip
    r["pulls"] = pulls
    tracked = w / "tracked" / "inductor"
    # one HOME for the pull and the run, as on a node: the pull puts Inductor's cuda_utils in
    # that HOME's ~/.triton/cache too, where torch.compile first asks for it
    pull(args.image, tracked, w / "home-tracked")
    r["track"] = tracked_run(tracked, w / "home-tracked")
    med = {k: statistics.median(x["first_forward_s"] for x in v) for k, v in rows.items()}
    r.update(rounds=rows, median_first_forward_s=med,
             restored_over_local=med["restored"] / med["local"])  # fmt: skip
    skipped_ok = all(
        p["gpus"] == [own]
        and all(pp.get("other_gpus") == {g: len(u) for g, u in others.items() if u}
                for pp in p["parts"])
        for p in pulls
    )  # fmt: skip
    r["checks"] = {
        "pull_installed_own_units_only": len(got) == len(mine) > 0
        and not any(foreign.values())
        and skipped_ok,
        "graph_keys_equal": r["keys_equal"]["fxgraph"] and r["keys_equal"]["aotautograd"],
        "every_restored_round_hit": all(hit_both(x) for x in rows["restored"]),
        "tracked_compiled_nothing": bool(r["track"].get("compiled_nothing")),
        "mixed_warm_native_here_gpuless_other": r["mixed_members"].get(own) == "native"
        and set(r["mixed_members"].values()) == {"native", "gpu-less"}
        and all(r["mixed_keys_equal"].values()),
        "restored_within_1.2x": r["restored_over_local"] <= 1.2,
        "shipped_profile_settings_as_recorded_here": not r["profile_settings_differ"]
        and len(here) > 100,
    }
    save()
    print(json.dumps(r, indent=2, default=str))
    ok = all(r["checks"].values())
    print("PROOF", "PASSED" if ok else "FAILED", json.dumps(r["checks"]))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
