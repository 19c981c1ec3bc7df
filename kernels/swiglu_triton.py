"""Triton kernels of ``kernels.swiglu``: a 2-D grid of (row, block of the I columns)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _forward(GU, Y, stride_gu, stride_y, width, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < width
    gate = tl.load(GU + row * stride_gu + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(GU + row * stride_gu + width + cols, mask=mask, other=0.0).to(tl.float32)
    y = gate * tl.sigmoid(gate) * up
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _backward(DY, GU, DGU, stride_dy, stride_gu, stride_dgu, width, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < width
    dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
    gate = tl.load(GU + row * stride_gu + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(GU + row * stride_gu + width + cols, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(gate)
    silu = gate * sig
    d_gate = dy * up * sig * (1.0 + gate * (1.0 - sig))
    tl.store(DGU + row * stride_dgu + cols, d_gate.to(DGU.dtype.element_ty), mask=mask)
    tl.store(DGU + row * stride_dgu + width + cols, (dy * silu).to(DGU.dtype.element_ty), mask=mask)


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def forward(gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) · up`` [rows, I] of ``gate_up`` [rows, 2·I]."""
    gate_up = _rows(gate_up)
    rows, width = gate_up.shape[0], gate_up.shape[1] // 2
    y = torch.empty(rows, width, dtype=gate_up.dtype, device=gate_up.device)
    _forward[(rows, triton.cdiv(width, BLOCK))](gate_up, y, gate_up.stride(0), y.stride(0), width, BLOCK=BLOCK)
    return y


def backward(dy: torch.Tensor, gate_up: torch.Tensor) -> torch.Tensor:
    """``d gate_up`` [rows, 2·I] for the output gradient ``dy`` [rows, I]."""
    dy, gate_up = _rows(dy), _rows(gate_up)
    rows, width = dy.shape
    d_gate_up = torch.empty_like(gate_up)
    _backward[(rows, triton.cdiv(width, BLOCK))](dy, gate_up, d_gate_up, dy.stride(0), gate_up.stride(0),
                                                 d_gate_up.stride(0), width, BLOCK=BLOCK)
    return d_gate_up
