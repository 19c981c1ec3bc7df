"""Scaled dot-product attention behind one function, with interchangeable backends.

Backends:
  ``eager``  — the plain-torch reference: softmax(q kᵀ / √d + mask) v in fp32.
  ``sdpa``   — ``torch.nn.functional.scaled_dot_product_attention`` (fused on CPU and GPU).
  ``flash``  — ``flash_attn.flash_attn_func`` on CUDA in fp16/bf16, when installed and the
               call needs no explicit mask (causal or full attention only).
  ``auto``   — flash when usable, else sdpa.

Shapes: q [B, Hq, T, D], k/v [B, Hkv, S, D] with Hq a multiple of Hkv (grouped-query
attention). ``mask`` is a boolean [B, 1, T, S] (True = may attend) or None; ``causal``
applies only when ``mask`` is None and means query i sees keys 0..i (T == S).

``window`` > 0 (layer-wise window attention) also hides keys ``window`` or more positions behind
the query: query i (key index S - T + i) sees keys j with ``i' - window < j``. Without a mask the
causal band is computed a block of queries at a time (:func:`banded_attention`), so no T×S mask
is ever built; with a mask the band is folded into it.
"""

from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "sdpa", "eager", "flash")
_HAS_FLASH = importlib.util.find_spec("flash_attn") is not None


def _expand_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def eager_attention(q, k, v, mask=None, causal=True, dropout_p=0.0):
    """Reference implementation in fp32; the other backends are tested against it."""
    groups = q.shape[1] // k.shape[1]
    k, v = _expand_kv(k, groups), _expand_kv(v, groups)
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is None and causal:
        t, s = q.shape[-2], k.shape[-2]
        mask = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # fully-masked rows (padding) give 0
    if dropout_p > 0:
        probs = F.dropout(probs, dropout_p)
    return (probs @ v.float()).to(q.dtype)


def sdpa_attention(q, k, v, mask=None, causal=True, dropout_p=0.0):
    """torch's fused kernel; grouped-query attention without materialising repeated k/v."""
    gqa = q.shape[1] != k.shape[1]
    if mask is not None:
        # rows with no visible key would be NaN: let them see everything, callers ignore them
        mask = mask | ~mask.any(dim=-1, keepdim=True)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal and mask is None, enable_gqa=gqa
    )


def flash_usable(q: torch.Tensor, mask) -> bool:
    return _HAS_FLASH and mask is None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def flash_attention(q, k, v, mask=None, causal=True, dropout_p=0.0):
    """flash-attn 2 (expects [B, T, H, D]); grouped-query attention is native there."""
    from flash_attn import flash_attn_func

    if not flash_usable(q, mask):
        raise ValueError("flash attention needs flash-attn installed, CUDA fp16/bf16 tensors and no mask")
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p, causal=causal)
    return out.transpose(1, 2)


def band_mask(t: int, s: int, window: int, device) -> torch.Tensor:
    """[T, S] boolean: key j is within ``window`` of query i (key index s - t + i), causally."""
    q_index = torch.arange(s - t, s, device=device)[:, None]
    k_index = torch.arange(s, device=device)[None, :]
    return (k_index <= q_index) & (k_index > q_index - window)


def banded_attention(q, k, v, window: int, dropout_p=0.0, backend="auto", block: int = 512):
    """Causal window attention (T == S) one block of queries at a time: each block reads only the
    keys it can see, so memory is O(T · (block + window)) instead of O(T²)."""
    t = q.shape[-2]
    outputs = []
    for start in range(0, t, block):
        end = min(start + block, t)
        first = max(0, start - window + 1)
        mask = band_mask(end - start, end - first, window, q.device)[None, None]
        outputs.append(attention(q[..., start:end, :], k[..., first:end, :], v[..., first:end, :],
                                 mask=mask, causal=False, dropout_p=dropout_p, backend=backend))
    return torch.cat(outputs, dim=-2)


def attention(q, k, v, mask=None, causal=True, dropout_p=0.0, backend="auto", window: int = 0):
    """Dispatch to a backend (see module docstring)."""
    if 0 < window < k.shape[-2]:
        if mask is None and causal:
            return banded_attention(q, k, v, window, dropout_p, backend)
        band = band_mask(q.shape[-2], k.shape[-2], window, q.device)
        mask = band if mask is None else mask & band
    if backend == "auto":
        backend = "flash" if flash_usable(q, mask) else "sdpa"
    if backend == "sdpa":
        return sdpa_attention(q, k, v, mask, causal, dropout_p)
    if backend == "eager":
        return eager_attention(q, k, v, mask, causal, dropout_p)
    if backend == "flash":
        return flash_attention(q, k, v, mask, causal, dropout_p)
    raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
