"""Triton kernels of ``kernels.rms_norm`` (one program per row forward; rows in a loop backward)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_common import program_count, row_block


@triton.jit
def _forward(X, W, Y, RSTD, stride_x, stride_y, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    normed = (x * rstd).to(X.dtype.element_ty).to(tl.float32)  # rounded to x's dtype, as the reference
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, (normed * w).to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)


@triton.jit
def _backward(DY, X, W, RSTD, DX, DW, stride_dy, stride_x, stride_dx, n_rows, n_cols, rows_per_program,
              BLOCK: tl.constexpr):
    program = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    col_mask = cols < n_cols
    w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    first = program * rows_per_program
    for i in range(0, rows_per_program):
        row = (first + i).to(tl.int64)
        mask = cols < tl.where(row < n_rows, n_cols, 0)  # (a & of block and scalar masks breaks the interpreter)
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + tl.minimum(row, n_rows - 1))  # rows past the end load zeros above
        x_hat = x * rstd
        w_dy = w * dy
        dx = (w_dy - x_hat * (tl.sum(x_hat * w_dy, axis=0) / n_cols)) * rstd
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw += dy * x_hat
    tl.store(DW + program * n_cols + cols, dw, mask=col_mask)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` [rows, N] with unit column stride (a copy only when needed)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def forward(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(y [rows, N] in the promoted dtype of x and weight, 1/rms per row in fp32) of ``x`` [rows, N]."""
    x = _rows(x)
    n_rows, n_cols = x.shape
    y = torch.empty(n_rows, n_cols, dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    block, warps = row_block(n_cols)
    _forward[(n_rows,)](x, weight.contiguous(), y, rstd, x.stride(0), y.stride(0), n_cols, eps,
                        BLOCK=block, num_warps=warps)
    return y, rstd


def backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor):
    """(dx [rows, N] in x's dtype, dw [N] in weight's dtype)."""
    dy, x = _rows(dy), _rows(x)
    n_rows, n_cols = x.shape
    programs = program_count(n_rows, x.device)
    dx = torch.empty(n_rows, n_cols, dtype=x.dtype, device=x.device)
    dw = torch.empty(programs, n_cols, dtype=torch.float32, device=x.device)
    block, warps = row_block(n_cols)
    _backward[(programs,)](dy, x, weight.contiguous(), rstd, dx, dw, dy.stride(0), x.stride(0), dx.stride(0),
                           n_rows, n_cols, triton.cdiv(n_rows, programs), BLOCK=block, num_warps=warps)
    return dx, dw.sum(0).to(weight.dtype)
