"""Triton kernel of ``kernels.cross_entropy``: softmax cross-entropy and its logit gradient for one chunk.

One program per row of the fp32 logits: an online max/sum pass gives log Σ exp, the row's loss is
that minus the target logit (0 on ignored rows), and a second pass writes ``softmax − onehot``
(zero on ignored rows) into the gradient buffer, which may be the logits buffer itself.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_common import row_block

MAX_BLOCK = 32768


@triton.jit
def _cross_entropy(LOGITS, GRAD, LABELS, LOSS, stride_l, stride_g, vocab, ignore_index,
                   WITH_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    logits = LOGITS + row * stride_l
    label = tl.load(LABELS + row)
    valid = label != ignore_index
    target = tl.where(valid, label, 0)
    running_max = float("-inf")
    running_sum = 0.0
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(logits + cols, mask=cols < vocab, other=float("-inf"))
        new_max = tl.maximum(running_max, tl.max(x, axis=0))
        running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(x - new_max), axis=0)
        running_max = new_max
    lse = running_max + tl.log(running_sum)
    target_logit = tl.load(logits + target)
    tl.store(LOSS + row, tl.where(valid, lse - target_logit, 0.0))
    if WITH_GRAD:
        keep = tl.where(valid, 1.0, 0.0)
        grad = GRAD + row * stride_g
        for start in range(0, vocab, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < vocab
            x = tl.load(logits + cols, mask=mask, other=0.0)
            g = tl.exp(x - lse) - tl.where(cols == target, 1.0, 0.0)
            tl.store(grad + cols, (g * keep).to(GRAD.dtype.element_ty), mask=mask)


def cross_entropy_chunk(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int,
                        grad: torch.Tensor | None) -> torch.Tensor:
    """Per-row losses [rows] (fp32) of ``logits`` [rows, V] (fp32, unit column stride) against ``labels``;
    writes ``softmax − onehot`` into ``grad`` [rows, V] (any float dtype, may be ``logits``) when given."""
    rows, vocab = logits.shape
    loss = torch.empty(rows, dtype=torch.float32, device=logits.device)
    block, warps = row_block(min(vocab, MAX_BLOCK))
    out = logits if grad is None else grad
    _cross_entropy[(rows,)](logits, out, labels, loss, logits.stride(0), out.stride(0), vocab, ignore_index,
                            WITH_GRAD=grad is not None, BLOCK=block, num_warps=warps)
    return loss
