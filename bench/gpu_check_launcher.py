"""What a restored first forward does that a local one does not: Triton's driver helpers.

    python bench/gpu_check_launcher.py [--rounds 2]     (GPU machine, after bench/gpu_env.sh)

Warms OPT-125m on the GPU and without it (the shipped H200 profile), packages the GPU-less
warm, then times one first forward per kind and round, each on a fresh dir: A a pull of the
image as it is; B the same plus the GPU warm's Triton helper dirs (``__triton_launcher*.so``,
``cuda_utils*.so``, built by gcc at the first launch, which a GPU-less warm cannot do); C a
copy of the GPU warm. B close to C and A above both says the gap is the helpers' build.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_proof_gpuless as proof

from tcmtasks import ops

PROFILE = proof.REPO / "examples/gpu-profiles/nvidia-h200-torch2.11.0+cu130-cp312.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/tcm-launcher-check"))
    args = ap.parse_args()
    w = args.workdir
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    local, gpuless, pristine = w / "local", w / "gpuless", w / "pristine"
    t = time.perf_counter()
    warm = ["warm", "--backend", "torch", "--model", "opt-125m", "-o"]
    proof.tcm([*warm, str(local)], proof.clean_env())
    proof.tcm([*warm, str(gpuless), "--gpu-profile", str(PROFILE)], proof.clean_env(), hidden=True)
    print(f"warms {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    shutil.copytree(local, pristine, symlinks=True)
    image = f"oci:{w / 'image'}:v1"
    ops.package(gpuless, image)
    helpers = [d for d in pristine.glob("triton/*/*") if d.is_dir() and not proof._kernel_entry(d)]
    rows = []
    for i in range(args.rounds):
        for kind in ("A", "B", "C"):
            node = w / f"{kind}{i}" / "inductor"
            if kind == "C":
                shutil.copytree(pristine, node, symlinks=True)
            else:
                ops.pull(image, ops.RestoreOptions(inductor_dir=node))
                for d in helpers if kind == "B" else []:
                    shutil.copytree(d, node / d.relative_to(pristine))
            r = proof.forward(node, "opt-125m")
            rows.append({"kind": kind, "round": i, "first_forward_s": r["first_forward_s"],
                         "helpers_after": proof.helpers(node)})  # fmt: skip
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"helpers": [d.name for d in helpers], "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
