"""Tracking overhead on a GPU: per lookup and per launch, tracked vs not, side by side.

    PYTHONPATH=. python bench/track_bench.py [--rounds 5] [--launches 10000]

A warm cache serves bench/gpu_workload.py's 14 kernels. Each round starts one process
without tracking and one with TRITON_CACHE_MANAGER=tcmtasks.track:TrackingCacheManager
(alternating, so drift hits both). In each process:
  * lookups: after one kernel has paid Triton's per-process start-up (triton_key), the first
    launch of each of the other 13 kernels (a disk lookup + load each) is timed;
  * launches: 10,000 launches of an already-loaded kernel, timed with a CUDA sync;
  * get_group: 2,000 direct calls of the manager's get_group on a cached key (CPU only).
Medians over rounds are printed, with the tracked/plain ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def child(launches: int) -> dict:
    import torch
    import triton

    sys.path.insert(0, str(REPO / "bench"))
    import gpu_workload as w
    from triton.runtime.cache import get_cache_manager

    dev = "cuda"
    n = 98432
    x, y = torch.rand(n, device=dev), torch.rand(n, device=dev)
    out = torch.empty_like(x)
    torch.cuda.synchronize()
    # pay the per-process start-up (triton_key hashing libtriton) on one kernel
    w.add_kernel[(triton.cdiv(n, 256),)](x, y, out, n, BLOCK=256)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for block in (512, 1024):
        w.add_kernel[(triton.cdiv(n, block),)](x, y, out, n, BLOCK=block)
    xh, yh = x.half(), y.half()
    w.add_kernel[(triton.cdiv(n, 1024),)](xh, yh, torch.empty_like(xh), n, BLOCK=1024)
    s = torch.randn(1823, 781, device=dev)
    so = torch.empty_like(s)
    w.softmax_kernel[(s.shape[0],)](so, s, s.stride(0), so.stride(0), s.shape[1], BLOCK=1024)
    wt, bt = torch.rand(781, device=dev), torch.rand(781, device=dev)
    w.layer_norm_kernel[(s.shape[0],)](s, so, wt, bt, s.stride(0), 781, 1e-5, BLOCK=1024)
    a = torch.randn(512, 512, device=dev, dtype=torch.float16)
    c = torch.empty_like(a)
    for bm, bn, bk, gm, warps, stages in w.MATMUL_CONFIGS:
        w.matmul_kernel[(triton.cdiv(512, bm) * triton.cdiv(512, bn),)](
            a, a, c, 512, 512, 512, a.stride(0), a.stride(1), a.stride(0), a.stride(1),
            c.stride(0), c.stride(1), BM=bm, BN=bn, BK=bk, GM=gm, num_warps=warps,
            num_stages=stages)  # fmt: skip
    torch.cuda.synchronize()
    lookups = time.perf_counter() - t

    grid = (triton.cdiv(n, 1024),)
    for _ in range(100):
        w.add_kernel[grid](x, y, out, n, BLOCK=1024)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(launches):
        w.add_kernel[grid](x, y, out, n, BLOCK=1024)
    torch.cuda.synchronize()
    per_launch = (time.perf_counter() - t) / launches

    # a cached key's group, looked up directly through whichever manager is configured
    cache = Path(os.environ["TRITON_CACHE_DIR"])
    grp = next(cache.glob("*/__grp__add_kernel.json"))
    key_hex = __import__("base64").b32decode(grp.parent.name + "====").hex()
    mgr = get_cache_manager(key_hex)
    t = time.perf_counter()
    for _ in range(2000):
        assert mgr.get_group("add_kernel.json")
    per_get_group = (time.perf_counter() - t) / 2000
    return {
        "lookups_13": lookups,
        "per_launch": per_launch,
        "get_group": per_get_group,
        "manager": type(mgr).__name__,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--launches", type=int, default=10000)
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.launches)))
        return
    work = Path(tempfile.mkdtemp(prefix="tcm-track-bench-"))
    base = {
        **os.environ,
        "TRITON_CACHE_DIR": str(work / "cache"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    base.pop("TRITON_CACHE_MANAGER", None)
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_workload.py")],
        env=base,
        check=True,
        capture_output=True,
    )  # warm the cache
    modes = {
        "plain": base,
        "tracked": {
            **base,
            "TRITON_CACHE_MANAGER": "tcmtasks.track:TrackingCacheManager",
            "TCM_TRACK_DIR": str(work / "events"),
        },
    }
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode, env in modes.items():
            proc = subprocess.run(
                [sys.executable, __file__, "--child", "--launches", str(args.launches)],
                env=env,
                capture_output=True,
                text=True,
            )
            if proc.returncode:
                raise SystemExit(proc.stderr)
            results[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    events = sum(len(p.read_text().splitlines()) for p in (work / "events").glob("*.jsonl"))
    gpu = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"{gpu}; {args.rounds} rounds, median; managers: "
        f"{results['plain'][0]['manager']} vs {results['tracked'][0]['manager']}; "
        f"{events} tracked events written"
    )
    for metric, unit, scale in (
        ("lookups_13", "ms for 13 first launches", 1e3),
        ("per_launch", "us per launch (10k, cached)", 1e6),
        ("get_group", "us per get_group call", 1e6),
    ):
        p = statistics.median(r[metric] for r in results["plain"]) * scale
        t = statistics.median(r[metric] for r in results["tracked"]) * scale
        print(
            f"  {metric:<11} plain {p:9.3f}  tracked {t:9.3f}  ratio {t / p:5.3f}  "
            f"diff {t - p:+8.3f} {unit}"
        )
    for mode in modes:
        vals = " ".join(f"{r['per_launch'] * 1e6:.2f}" for r in results[mode])
        print(f"  per_launch rounds, {mode:<7}: {vals} us")
    diff = (
        (
            statistics.median(r["lookups_13"] for r in results["tracked"])
            - statistics.median(r["lookups_13"] for r in results["plain"])
        )
        / 13
        * 1e3
    )
    print(f"  per-lookup overhead (from first launches): {diff:+.3f} ms")


if __name__ == "__main__":
    main()
