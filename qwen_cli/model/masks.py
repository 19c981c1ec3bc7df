"""Attention masks and positions: causal, left padding, packed segments (and, later, windows).

``build_mask`` returns a boolean ``[B|1, 1, T, past+T]`` mask (True = may attend) or None when
plain causal attention suffices; ``segment_positions`` restarts positions per packed segment.
"""

from __future__ import annotations

import torch


def segment_positions(segment_ids: torch.Tensor) -> torch.Tensor:
    """Positions that restart at 0 wherever the segment id changes along the sequence."""
    t = segment_ids.shape[1]
    idx = torch.arange(t, device=segment_ids.device).expand_as(segment_ids)
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    start_idx = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - start_idx


def build_mask(t: int, past: int, attention_mask, segment_ids, device) -> torch.Tensor | None:
    """Boolean [B|1, 1, T, past+T] mask (True = may attend), or None for plain causal attention.

    With a cache the mask is always built for decoding: torch's CPU SDPA picks a kernel ~100x
    slower for a one-token query when no mask is given. A first forward whose ``attention_mask``
    hides nothing (no padding) is plain causal attention, so a long prompt never builds a T×T mask.
    """
    if past == 0 and attention_mask is not None and bool(attention_mask[:, :t].all()):
        attention_mask = None
    if attention_mask is None and segment_ids is None and past == 0:
        return None
    s = past + t
    q_pos = torch.arange(past, s, device=device)[:, None]
    mask = (torch.arange(s, device=device)[None, :] <= q_pos)[None, None]
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, None, :s]
    if segment_ids is not None:
        if past:
            raise ValueError("segment_ids cannot be combined with a KV cache")
        mask = mask & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    return mask
