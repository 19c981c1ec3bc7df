"""The Qwen model: config, decoder, RoPE, masks, KV cache, LoRA and heads — no I/O, logging or parallelism.

Public names: ``ModelConfig``, ``PRESETS``, ``QwenModel``, ``Block`` (the repeated unit that
training shards and compiles) and ``KVCache``. Submodules: ``config``, ``decoder``, ``rope``
(RoPE and its variants), ``masks``, ``kv_cache``, ``lora``, ``heads`` (value / reward heads).
"""

from qwen_cli.model.config import PRESETS, ModelConfig
from qwen_cli.model.decoder import Block, QwenModel
from qwen_cli.model.kv_cache import KVCache

__all__ = ["PRESETS", "Block", "KVCache", "ModelConfig", "QwenModel"]
