"""Checkpoint families: one adapter module per family, owning its tensor names and config mapping.

``qwen2`` is the layout of our own checkpoint directories (and of released Qwen2/Qwen2.5);
``qwen1`` reads released Qwen (v1) directories; ``llama`` Llama/Mistral directories (zero q/k/v
biases); ``gguf_file`` llama.cpp GGUF files (``gguf_tokenizer`` rebuilds their tokenizer). The
contract every adapter meets is in :mod:`qwen_cli.interop.adapter`; ``qwen convert`` (``qwen_cli.checkpoint.convert``) picks one
from :data:`FAMILIES`.
"""

from qwen_cli.interop import gguf_file, llama, qwen1, qwen2

FAMILIES = {"qwen1": qwen1, "qwen2": qwen2, "llama": llama, "gguf": gguf_file}

__all__ = ["FAMILIES", "gguf_file", "llama", "qwen1", "qwen2"]
