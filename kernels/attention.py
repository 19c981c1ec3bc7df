"""Scaled dot-product attention behind one function, with interchangeable backends.

Backends:
  ``eager``  — the plain-torch reference: softmax(q kᵀ / √d + mask) v in fp32.
  ``sdpa``   — ``torch.nn.functional.scaled_dot_product_attention`` (fused on CPU and GPU).
  ``flash``  — flash-attn 2 on CUDA in fp16/bf16, when installed: ``flash_attn_func`` for calls
               that need no explicit mask (causal or full attention, a causal window natively), and
               ``flash_attn_varlen_func`` for packed segments (``segments``: the segment ids; their
               boundaries become ``cu_seqlens``, :func:`cu_seqlens`), so no mask is built for it.
  ``auto``   — flash when usable, else sdpa.

Decoding with a KV cache goes through sdpa: our cache is [B, Hkv, S, D] with one shared length and
the decoder passes a padding mask there, while ``flash_attn_with_kvcache`` wants [B, S, Hkv, D] with
per-row lengths; a prefill without padding (no mask) does use flash.

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


def flash_window(window: int) -> tuple[int, int]:
    """flash-attn's ``window_size`` (left, right) for our causal ``window`` (0 = none): key j is visible
    to query i when ``i - left <= j <= i + right``, i.e. ``i - window < j`` as in :func:`band_mask`."""
    return (window - 1, 0) if window > 0 else (-1, -1)


def flash_attention(q, k, v, mask=None, causal=True, dropout_p=0.0, window: int = 0):
    """flash-attn 2 (expects [B, T, H, D]); grouped-query attention is native there."""
    from flash_attn import flash_attn_func

    if not flash_usable(q, mask):
        raise ValueError("flash attention needs flash-attn installed, CUDA fp16/bf16 tensors and no mask")
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p, causal=causal,
                          window_size=flash_window(window))
    return out.transpose(1, 2)


def cu_seqlens(segment_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(int32 [segments + 1] offsets of the packed segments in the B·T flattened tokens, the longest
    segment's length): flash-attn's varlen arguments. A segment is a run of equal ids within one row;
    a row boundary always starts a new one."""
    b, t = segment_ids.shape
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    offsets = starts.reshape(-1).nonzero().squeeze(1)
    offsets = torch.cat([offsets, offsets.new_full((1,), b * t)]).to(torch.int32)
    return offsets, int((offsets[1:] - offsets[:-1]).max())


def flash_varlen_attention(q, k, v, segment_ids, dropout_p=0.0, window: int = 0):
    """Causal attention within each packed segment (T == S), with flash-attn's varlen kernel."""
    from flash_attn import flash_attn_varlen_func

    b, heads, t, d = q.shape
    offsets, longest = cu_seqlens(segment_ids)

    def tokens(x):  # [B, H, T, D] -> [B·T, H, D]
        return x.transpose(1, 2).reshape(b * t, x.shape[1], d)

    out = flash_attn_varlen_func(tokens(q), tokens(k), tokens(v), offsets, offsets, longest, longest, dropout_p,
                                 causal=True, window_size=flash_window(window))
    return out.view(b, t, heads, d).transpose(1, 2)


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


def attention(q, k, v, mask=None, causal=True, dropout_p=0.0, backend="auto", window: int = 0, segments=None):
    """Dispatch to a backend (see module docstring). ``segments`` (the [B, T] segment ids that ``mask``
    was built from) lets flash-attn run packed rows without the mask."""
    if backend in ("auto", "flash") and flash_usable(q, None) and q.shape[-2] == k.shape[-2]:
        if segments is not None:
            return flash_varlen_attention(q, k, v, segments, dropout_p, window)
        if mask is None and (causal or not window):
            return flash_attention(q, k, v, None, causal, dropout_p, window)
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
