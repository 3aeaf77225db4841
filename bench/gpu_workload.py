"""A real GPU workload of distinct Triton kernels, checked against torch: the thing a restored,
pruned or warmed cache must serve without compiling.

    python bench/gpu_workload.py          # needs a CUDA GPU and torch

14 specialisations: vector add (fp32 at 3 block sizes, fp16 at one), fused softmax, layer
norm, and a
matmul over the 8 configs of Triton's tutorial autotuner (each config launched directly, so the
set is fixed). Prints one JSON line: kernels launched, max error, seconds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tcmtasks" / "data" / "kernels"))
from tutorials import (  # the shipped kernel set, tcmtasks/data/kernels/tutorials.py
    MATMUL_CONFIGS,
    add_kernel,
    layer_norm_kernel,
    matmul_kernel,
    softmax_kernel,
)


def run() -> dict:
    t0 = time.perf_counter()
    dev = "cuda"
    torch.manual_seed(0)
    errs = []
    n = 98432
    for dtype in (torch.float32, torch.float16):
        x, y = torch.rand(n, device=dev, dtype=dtype), torch.rand(n, device=dev, dtype=dtype)
        for block in (256, 512, 1024) if dtype == torch.float32 else (1024,):
            out = torch.empty_like(x)
            add_kernel[(triton.cdiv(n, block),)](x, y, out, n, BLOCK=block)
            errs.append((out - (x + y)).abs().max().item())
    x = torch.randn(1823, 781, device=dev)
    out = torch.empty_like(x)
    softmax_kernel[(x.shape[0],)](out, x, x.stride(0), out.stride(0), x.shape[1], BLOCK=1024)
    errs.append((out - torch.softmax(x, dim=1)).abs().max().item())
    w, b = torch.rand(781, device=dev), torch.rand(781, device=dev)
    y = torch.empty_like(x)
    layer_norm_kernel[(x.shape[0],)](x, y, w, b, x.stride(0), x.shape[1], 1e-5, BLOCK=1024)
    ref = torch.nn.functional.layer_norm(x, (781,), w, b, 1e-5)
    errs.append((y - ref).abs().max().item())
    a = torch.randn(512, 512, device=dev, dtype=torch.float16)
    bm = torch.randn(512, 512, device=dev, dtype=torch.float16)
    ref = a @ bm
    for bm_, bn, bk, gm, warps, stages in MATMUL_CONFIGS:
        c = torch.empty_like(ref)
        grid = (triton.cdiv(512, bm_) * triton.cdiv(512, bn),)
        matmul_kernel[grid](
            a,
            bm,
            c,
            512,
            512,
            512,
            a.stride(0),
            a.stride(1),
            bm.stride(0),
            bm.stride(1),
            c.stride(0),
            c.stride(1),
            BM=bm_,
            BN=bn,
            BK=bk,
            GM=gm,
            num_warps=warps,
            num_stages=stages,
        )
        errs.append(((c - ref).abs().max() / ref.abs().max()).item())
    torch.cuda.synchronize()
    return {"launches": len(errs), "max_err": max(errs), "seconds": time.perf_counter() - t0}


if __name__ == "__main__":
    print(json.dumps(run()))
