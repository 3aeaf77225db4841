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
import time

import torch
import triton
import triton.language as tl


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n_elements, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    tl.store(
        out_ptr + offs,
        tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask),
        mask=mask,
    )


@triton.jit
def softmax_kernel(out_ptr, in_ptr, in_stride, out_stride, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(in_ptr + row * in_stride + cols, mask=mask, other=-float("inf"))
    x = x - tl.max(x, axis=0)
    num = tl.exp(x)
    tl.store(out_ptr + row * out_stride + cols, num / tl.sum(num, axis=0), mask=mask)


@triton.jit
def layer_norm_kernel(x_ptr, y_ptr, w_ptr, b_ptr, stride, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / n_cols
    xc = tl.where(mask, x - mean, 0.0)
    rstd = 1 / tl.sqrt(tl.sum(xc * xc, axis=0) / n_cols + eps)
    w = tl.load(w_ptr + cols, mask=mask)
    b = tl.load(b_ptr + cols, mask=mask)
    tl.store(y_ptr + row * stride + cols, xc * rstd * w + b, mask=mask)


@triton.jit
def matmul_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    M,
    N,
    K,
    sam,
    sak,
    sbk,
    sbn,
    scm,
    scn,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    GM: tl.constexpr,
):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BM)
    num_n = tl.cdiv(N, BN)
    group = GM * num_n
    first_m = (pid // group) * GM
    size_m = min(num_m - first_m, GM)
    pid_m = first_m + ((pid % group) % size_m)
    pid_n = (pid % group) // size_m
    rm = (pid_m * BM + tl.arange(0, BM)) % M
    rn = (pid_n * BN + tl.arange(0, BN)) % N
    rk = tl.arange(0, BK)
    a = a_ptr + rm[:, None] * sam + rk[None, :] * sak
    b = b_ptr + rk[:, None] * sbk + rn[None, :] * sbn
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BK)):
        acc += tl.dot(
            tl.load(a, mask=rk[None, :] < K - k * BK, other=0.0),
            tl.load(b, mask=rk[:, None] < K - k * BK, other=0.0),
        )
        a += BK * sak
        b += BK * sbk
    cm = pid_m * BM + tl.arange(0, BM)
    cn = pid_n * BN + tl.arange(0, BN)
    tl.store(
        c_ptr + cm[:, None] * scm + cn[None, :] * scn,
        acc.to(tl.float16),
        mask=(cm[:, None] < M) & (cn[None, :] < N),
    )


# (BM, BN, BK, GM, num_warps, num_stages): the tutorial's CUDA autotune configs
MATMUL_CONFIGS = [
    (128, 256, 64, 8, 8, 3),
    (64, 256, 32, 8, 4, 4),
    (128, 128, 32, 8, 4, 4),
    (128, 64, 32, 8, 4, 4),
    (64, 128, 32, 8, 4, 4),
    (128, 32, 32, 8, 4, 4),
    (64, 32, 32, 8, 2, 5),
    (32, 64, 32, 8, 2, 5),
]


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
