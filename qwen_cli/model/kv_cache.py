"""The preallocated key/value cache that incremental decoding writes into, one tensor pair per layer."""

from __future__ import annotations

import torch

from qwen_cli.model.config import ModelConfig


class KVCache:
    """Preallocated keys/values for incremental decoding: [layers][B, Hkv, max_len, D].

    ``length`` counts the positions already written; all sequences of a batch share it
    (left-pad prompts of different lengths and pass an ``attention_mask``).
    """

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, device=None, dtype=None) -> None:
        shape = (batch_size, config.num_kv_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)]
        self.length = 0
        self.max_len = max_len

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
