"""Attention as the profile's GPU runs it, for the GPU-less replay (gpuless.py).

Without the device, torch's C++ decomposition of ``scaled_dot_product_attention`` finds "no
CUDA device" and takes the math path, where the GPU takes cuDNN, flash or memory-efficient
kernels: another graph, another key. The kernel here asks the profile which backend the GPU
chose for the case (``sdp_choices``, recorded by ``tcm gpu --save-profile``) and calls the
same aten ops as aten/src/ATen/native/transformers/attention.cpp.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import NeedsGpu
from ..gpuprofile import GpuProfile, sdp_key

#: torch.nn.attention.SDPBackend names, as the profile records them
SDP_MATH, SDP_FLASH, SDP_EFFICIENT, SDP_CUDNN = (
    "MATH", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION",
)  # fmt: skip


def kernel_as_on(torch: Any, profile: GpuProfile, sdpa: Any, on_cuda: str) -> Callable[..., Any]:
    """A Python kernel for ``aten.scaled_dot_product_attention`` that calls the aten ops of the
    backend the profile's GPU chose for the case (``on_cuda``: what to say of one on the CPU)."""
    import math

    aten = torch.ops.aten
    names = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}

    def choice(query: Any, key: Any, value: Any, attn_mask: Any, dropout_p: float,
               is_causal: bool, enable_gqa: bool, grad: bool) -> str:  # fmt: skip
        mask = (
            "none" if attn_mask is None else ("bool" if attn_mask.dtype == torch.bool else "float")
        )
        # grouped-query attention: as torch's, the kernels take the key/value heads as they
        # are (attention.cpp passes them on unrepeated); only the choice differs
        gqa = bool(enable_gqa) and key.shape[-3] != query.shape[-3]
        case = sdp_key(
            names.get(query.dtype, str(query.dtype)), int(query.shape[-1]), mask,
            bool(is_causal), grad, dropout_p > 0, query.shape[-2] == key.shape[-2], gqa,
        )  # fmt: skip
        if value.shape[-1] != query.shape[-1] or case not in profile.sdp_choices:
            raise NeedsGpu(
                f"attention ({case.replace('|', ', ')}) is not "
                f"a case the GPU profile recorded: torch's kernel choice for it is unknown "
                f"without the GPU; warm this model on the GPU"
            )
        return profile.sdp_choices[case]

    def kernel(
        query: Any,
        key: Any,
        value: Any,
        attn_mask: Any = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        *,
        scale: Any = None,
        enable_gqa: bool = False,
    ) -> Any:
        args = (query, key, value, attn_mask, dropout_p, is_causal)
        if query.device.type != "cuda":  # the C++ composite would come back here, forever
            raise NeedsGpu(f"attention on the {query.device.type}: {on_cuda}")
        # grad: torch's should_compute_logsumexp, which both the choice and the kernels take
        lse = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
        backend = choice(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa, lse)
        if backend == SDP_MATH:  # the C++ decomposition without a device takes this path too
            return sdpa.decompose(*args, scale=scale, enable_gqa=enable_gqa)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            # convert_boolean_attn_mask(_cudnn): cuDNN takes no -inf, so its fill is -65504
            fill = -65504.0 if backend == SDP_CUDNN else -math.inf
            neg = aten.scalar_tensor.default(fill, dtype=query.dtype, device=attn_mask.device)
            attn_mask = aten.where.ScalarSelf(attn_mask, 0.0, neg)
        if backend == SDP_CUDNN:
            out = aten._scaled_dot_product_cudnn_attention.default(
                query, key, value, attn_mask, lse, dropout_p, is_causal, False, scale=scale
            )
            return out[0]
        if backend == SDP_FLASH:  # head dims in the profile are multiples of 8: no padding
            og_scale = scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])
            out = aten._scaled_dot_product_flash_attention.default(
                query, key, value, dropout_p, is_causal, False, scale=og_scale
            )
            return out[0]
        if backend == SDP_EFFICIENT:
            if attn_mask is not None:
                attn_mask = _mem_efficient_mask(aten, attn_mask, query, key)
            out = aten._scaled_dot_product_efficient_attention.default(
                query, key, value, attn_mask, lse, dropout_p, is_causal, scale=scale
            )
            return out[0]
        raise NeedsGpu(
            f"on {profile.name} torch picks attention backend {backend} for this model, "
            f"which tcm cannot replay without the GPU; warm it on the GPU"
        )

    return kernel


def _mem_efficient_mask(aten: Any, mask: Any, query: Any, key: Any) -> Any:
    """attention.cpp's preprocess_mask: a mask whose strides are not 16-aligned is padded
    and sliced back, then expanded to (batch, heads, q_len, kv_len)."""
    aligned = all(mask.stride(i) % 16 == 0 for i in range(mask.dim() - 1)) and (
        mask.stride(-1) == 1
    )
    if not aligned:
        last = mask.shape[-1]
        padded = aten.pad.default(mask, [0, 16 - last % 16])
        mask = aten.slice.Tensor(padded, -1, 0, last)
    return aten.expand.default(mask, [query.shape[0], query.shape[1], query.shape[2], key.shape[2]])
