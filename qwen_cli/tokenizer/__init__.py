"""Tokenizers: the tiktoken core (Qwen pattern, NFC, specials), any Hugging Face tokenizer, BPE training, stats.

``load_tokenizer("qwen" | "cl100k" | DIR)``, ``Tokenizer``, ``HFTokenizer`` and the interface both
offer, ``TextTokenizer``, are the public API. Submodules: ``vocabulary`` (pattern, specials, ranks
files), ``core`` (tiktoken ``Tokenizer``, ``load_tokenizer``), ``hf_tokenizer`` (a directory's own
``tokenizer.json`` through the ``tokenizers`` library), ``protocol``, ``chat_jinja`` (sandboxed
chat-template rendering), ``hf_files`` (Hugging Face tokenizer files, read and written), ``bpe``
(training a vocabulary, ``qwen tokenize train``), ``stats`` (compression, ``qwen tokenize stats``).
"""

from qwen_cli.tokenizer.core import Tokenizer, load_tokenizer
from qwen_cli.tokenizer.hf_tokenizer import HFTokenizer
from qwen_cli.tokenizer.protocol import TextTokenizer

__all__ = ["HFTokenizer", "TextTokenizer", "Tokenizer", "load_tokenizer"]
