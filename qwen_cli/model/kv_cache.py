"""The preallocated key/value cache that incremental decoding writes into, one tensor pair per layer.

Besides keys and values it remembers each cached token's position and the rotary frequencies its
key was rotated with, so a change of rotary base mid-generation (dynamic NTK crossing into the
next length bucket) can re-rotate the cached keys instead of silently mixing two bases.
"""

from __future__ import annotations

import torch

from qwen_cli.model.config import ModelConfig
from qwen_cli.model.rope import apply_rotary, rotary_cos_sin


class KVCache:
    """Preallocated keys/values for incremental decoding: [layers][B, Hkv, max_len, D].

    ``length`` counts the positions already written; all sequences of a batch share it
    (left-pad prompts of different lengths and pass an ``attention_mask``).
    """

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, device=None, dtype=None) -> None:
        shape = (batch_size, config.num_kv_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)]
        self.positions = torch.zeros(batch_size, max_len, dtype=torch.long, device=device)
        self.inv_freq: torch.Tensor | None = None  # the frequencies the cached keys were rotated with
        self.length = 0
        self.max_len = max_len

    def record_positions(self, position_ids: torch.Tensor) -> None:
        """Remember the positions of the tokens about to be written (before ``update``)."""
        self.positions[:, self.length : self.length + position_ids.shape[1]] = position_ids

    def rerotate(self, inv_freq: torch.Tensor) -> None:
        """Re-rotate every cached key from ``self.inv_freq`` to ``inv_freq`` (exact: rotations compose)."""
        if self.inv_freq is not None and self.length and not torch.equal(self.inv_freq, inv_freq):
            delta = inv_freq - self.inv_freq.to(inv_freq.device)
            cos, sin = rotary_cos_sin(self.positions[:, : self.length], delta, torch.float32)
            for keys in self.keys:
                cached = keys[:, :, : self.length]
                cached.copy_(apply_rotary(cached.float(), cos, sin).to(keys.dtype))
        self.inv_freq = inv_freq

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write new k/v after the current length; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions requested, capacity {self.max_len}")
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep only (or repeat) the batch rows in ``index``."""
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]
        self.positions = self.positions.index_select(0, index)


class StaticKVCache(KVCache):
    """A :class:`KVCache` whose one-token decode steps write at a tensor position and see the whole buffer.

    Prefill goes through :meth:`KVCache.update` (batched, python-int length). After ``slot`` is set
    (a one-element long tensor holding the position to write next), ``update`` copies the new
    key/value there with ``index_copy_`` and returns the full ``max_len`` buffers, so every decode step
    has the same shapes and a compiled step never recompiles as the sequence grows; the caller's
    attention mask hides the slots not yet written.

    The buffers are allocated once and only ever written in place (never replaced), and are marked as
    static addresses for ``torch.compile``: CUDA-graph trees then accept the step's in-place writes
    (they refuse to capture a graph that mutates an ordinary input) and replay one graph for every
    step, as transformers' ``StaticCache`` does. :meth:`reset` makes a cache reusable for the next
    generation, so the same addresses — and the same captured graph — serve it too.
    """

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, device=None, dtype=None) -> None:
        super().__init__(config, batch_size, max_len, device=device, dtype=dtype)
        self.slot: torch.Tensor | None = None
        for buffer in (*self.keys, *self.values):
            torch._dynamo.mark_static_address(buffer)

    def reset(self) -> None:
        """Empty the cache for a new generation, in place (stale keys stay: the caller's mask hides them)."""
        self.length, self.slot, self.inv_freq = 0, None, None

    def reorder(self, index: torch.Tensor) -> None:
        raise NotImplementedError("a static cache keeps its rows (and addresses); mask finished rows instead")

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        if self.slot is None:
            return super().update(layer, k, v)
        self.keys[layer].index_copy_(2, self.slot, k)
        self.values[layer].index_copy_(2, self.slot, v)
        return self.keys[layer], self.values[layer]
