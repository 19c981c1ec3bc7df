"""Tokenizers: the tiktoken core (Qwen pattern, NFC, specials), Hugging Face files, BPE training, stats.

``load_tokenizer("qwen" | "cl100k" | DIR)`` and ``Tokenizer`` are the public API (from
:mod:`qwen_cli.tokenizer.core`). Submodules: ``vocabulary`` (pattern, specials, ranks files),
``core``, ``hf_files`` (Hugging Face tokenizer files, read and written), ``bpe`` (training a
vocabulary, ``qwen tokenize train``), ``stats`` (compression, ``qwen tokenize stats``).
"""

from qwen_cli.tokenizer.core import Tokenizer, load_tokenizer

__all__ = ["Tokenizer", "load_tokenizer"]
