"""Triton kernel of ``kernels.rope``: one program per (batch, position) rotates every head's pairs."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rotate(X, COS, SIN, Y, seq_len, heads, half,
            sxb, sxh, sxt, scb, sct, ssb, sst, syb, syh, syt,
            INVERSE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    program = tl.program_id(0)
    b = (program // seq_len).to(tl.int64)
    t = (program % seq_len).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    d_mask = d < half
    cos = tl.load(COS + b * scb + t * sct + d, mask=d_mask, other=0.0).to(tl.float32)
    sin = tl.load(SIN + b * ssb + t * sst + d, mask=d_mask, other=0.0).to(tl.float32)
    if INVERSE:
        sin = -sin
    h = tl.arange(0, BLOCK_H)
    mask = (h[:, None] < heads) & d_mask[None, :]
    x_at = X + b * sxb + t * sxt + h[:, None] * sxh + d[None, :]
    y_at = Y + b * syb + t * syt + h[:, None] * syh + d[None, :]
    x1 = tl.load(x_at, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_at + half, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_at, (x1 * cos[None, :] - x2 * sin[None, :]).to(Y.dtype.element_ty), mask=mask)
    tl.store(y_at + half, (x2 * cos[None, :] + x1 * sin[None, :]).to(Y.dtype.element_ty), mask=mask)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool) -> torch.Tensor:
    """``x [B, H, T, D]`` rotated by the tables [B or 1, 1, T, D] (by minus the angle when ``inverse``).

    The result has ``x``'s dtype and the [B, T, H, D] memory layout the decoder's projections give.
    """
    b, heads, seq_len, dim = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    cos, sin = cos.expand(b, 1, seq_len, dim), sin.expand(b, 1, seq_len, dim)
    if cos.stride(-1) != 1 or sin.stride(-1) != 1:
        cos, sin = cos.contiguous(), sin.contiguous()
    y = torch.empty(b, seq_len, heads, dim, dtype=x.dtype, device=x.device).transpose(1, 2)
    half = dim // 2
    _rotate[(b * seq_len,)](x, cos, sin, y, seq_len, heads, half,
                            x.stride(0), x.stride(1), x.stride(2), cos.stride(0), cos.stride(2),
                            sin.stride(0), sin.stride(2), y.stride(0), y.stride(1), y.stride(2),
                            INVERSE=inverse, BLOCK_H=triton.next_power_of_2(heads),
                            BLOCK_D=triton.next_power_of_2(half))
    return y
