"""What the rest of the code may use of a tokenizer: the interface both tokenizer classes offer.

:class:`~qwen_cli.tokenizer.core.Tokenizer` (tiktoken, our vocabularies and Qwen's) and
:class:`~qwen_cli.tokenizer.hf_tokenizer.HFTokenizer` (any Hugging Face ``tokenizer.json``) both
satisfy :class:`TextTokenizer`; ``load_tokenizer`` returns one or the other.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Protocol


class StreamingDecoder(Protocol):
    def add(self, token_id: int) -> str: ...
    def flush(self) -> str: ...


class TextTokenizer(Protocol):
    name: str
    source: str  # where it was read from (a directory), for error messages
    special_ids: dict[str, int]  # special token -> id (never produced by ``encode``)
    vocab_size: int  # highest id + 1
    padded_vocab_size: int
    hash: str
    eot_id: int  # end of a document (separator in pretraining data, padding)
    bos_id: int | None  # tokenizer_config.json's bos_token (lm-eval's prefix token), None when unset
    im_start_id: int | None  # ChatML markers, None when the vocabulary has none
    im_end_id: int | None
    chat_template: str | None  # Jinja chat template of ``tokenizer_config.json``; None: ChatML
    template_tokens: dict[str, str]  # bos_token, eos_token, ... as the chat template sees them
    generation_eos_ids: tuple[int, ...]  # ``generation_config.json``'s eos_token_id

    def encode(self, text: str) -> list[int]: ...
    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]: ...
    def encode_with_specials(self, text: str, allowed: Iterable[str]) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def decode_bytes(self, ids: Iterable[int]) -> bytes: ...
    def token_bytes(self, token_id: int) -> bytes: ...
    def stream_decoder(self) -> StreamingDecoder: ...
    def save(self, directory: str | os.PathLike, hf: bool = True) -> None: ...
