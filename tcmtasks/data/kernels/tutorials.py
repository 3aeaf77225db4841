"""The Triton tutorials' kernels as a kernel set: vector add, fused softmax, layer norm, and
matmul with the tutorial's CUDA autotune configs (each config is compiled).

    tcm warm --backend triton --kernels examples/kernels/tutorials.py \\
             --target cuda:80,cuda:90,hip:gfx942 -o build/tutorials

Shapes are those bench/gpu_workload.py launches; a real run of the same launches
(python -m tcmtasks.warm.run_kernelset examples/kernels/tutorials.py, on a GPU) looks up
exactly the keys the warm wrote.
"""

import triton
import triton.language as tl

from tcmtasks.warm.kernelset import Launch, Tensor


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
    (128, 256, 64, 8, 8, 3), (64, 256, 32, 8, 4, 4), (128, 128, 32, 8, 4, 4),
    (128, 64, 32, 8, 4, 4), (64, 128, 32, 8, 4, 4), (128, 32, 32, 8, 4, 4),
    (64, 32, 32, 8, 2, 5), (32, 64, 32, 8, 2, 5),
]  # fmt: skip

matmul_autotuned = triton.autotune(
    configs=[
        triton.Config({"BM": bm, "BN": bn, "BK": bk, "GM": gm}, num_warps=w, num_stages=s)
        for bm, bn, bk, gm, w, s in MATMUL_CONFIGS
    ],
    key=["M", "N", "K"],
)(matmul_kernel)

N = 98432
ROWS, COLS = 1823, 781
M = K = NN = 512

KERNELS = [
    *[
        Launch(add_kernel, [Tensor("fp32", N)] * 3 + [N], {"BLOCK": b}, (triton.cdiv(N, b),))
        for b in (256, 512, 1024)
    ],
    Launch(add_kernel, [Tensor("fp16", N)] * 3 + [N], {"BLOCK": 1024}, (triton.cdiv(N, 1024),)),
    Launch(
        softmax_kernel,
        [Tensor("fp32", (ROWS, COLS)), Tensor("fp32", (ROWS, COLS)), COLS, COLS, COLS],
        {"BLOCK": 1024},
        (ROWS,),
    ),
    Launch(
        layer_norm_kernel,
        [
            Tensor("fp32", (ROWS, COLS)),
            Tensor("fp32", (ROWS, COLS)),
            Tensor("fp32", COLS),
            Tensor("fp32", COLS),
            COLS,
            COLS,
            1e-5,
        ],
        {"BLOCK": 1024},
        (ROWS,),
    ),
    Launch(
        matmul_autotuned,
        [
            Tensor("fp16", (M, K)),
            Tensor("fp16", (K, NN)),
            Tensor("fp16", (M, NN)),
            M,
            NN,
            K,
            K,
            1,
            NN,
            1,
            NN,
            1,
        ],
        grid=(triton.cdiv(M, 32) * triton.cdiv(NN, 32),),
    ),
]
