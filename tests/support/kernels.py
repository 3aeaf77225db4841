"""A small, real kernel set the test fixtures compile for cuda:80, cuda:90 and hip:gfx942."""

import triton
import triton.language as tl


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n_elements, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, x + y, mask=mask)


@triton.jit
def softmax_kernel(out_ptr, in_ptr, in_stride, out_stride, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(in_ptr + row * in_stride + cols, mask=mask, other=-float("inf"))
    x = x - tl.max(x, axis=0)
    num = tl.exp(x)
    tl.store(out_ptr + row * out_stride + cols, num / tl.sum(num, axis=0), mask=mask)


def launches(T):
    """(kernel, args, meta) of every specialisation; T builds a tensor stand-in from a dtype."""
    return [
        (add_kernel, (T("float32"), T("float32"), T("float32"), 4096), {"BLOCK": 1024}),
        (add_kernel, (T("float16"), T("float16"), T("float16"), 4096), {"BLOCK": 256}),
        (softmax_kernel, (T("float32"), T("float32"), 1024, 1024, 1000), {"BLOCK": 1024}),
    ]
