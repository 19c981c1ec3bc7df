"""Hugging Face tokenizer files for a :class:`qwen_cli.tokenizer.Tokenizer`.

tiktoken ranks are over raw bytes; Hugging Face byte-level BPE spells each byte as a
printable character (GPT-2's bytes-to-unicode map) and needs an explicit merge list. The
merge for a token is recovered from the ranks: run tiktoken's BPE on the token's own bytes
using only lower ranks; it ends in exactly two parts, and listing those pairs in rank order
reproduces tiktoken's choices. Files written: ``vocab.json``, ``merges.txt``,
``tokenizer.json`` (fast tokenizer, NFC + the same split pattern + byte level) and
``tokenizer_config.json`` (``Qwen2Tokenizer`` when the pattern is Qwen's, eos = pad =
``<|endoftext|>`` like Qwen2 base models, and a ChatML ``chat_template``).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qwen_cli.tokenizer import Tokenizer

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MODEL_MAX_LENGTH = 32768


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (printable bytes map to themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def byte_order() -> list[int]:
    """Bytes in GPT-2 order (printable first): the rank order of single-byte tokens in cl100k/qwen."""
    return list(bytes_to_unicode())


def to_unicode(token: bytes) -> str:
    """A token's bytes spelled in GPT-2 byte-level characters."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def _bpe_parts(token: bytes, ranks: dict[bytes, int], max_rank: int) -> list[bytes]:
    """tiktoken's merge loop on ``token`` restricted to ranks below ``max_rank``."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best_rank, best_i = max_rank, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1], max_rank)
            if rank < best_rank:
                best_rank, best_i = rank, i
        if best_i < 0:
            break
        parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Rank-ordered merges that rebuild every multi-byte token (unreachable tokens get none)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            parts = _bpe_parts(token, ranks, rank)
            if len(parts) == 2:
                merges.append((parts[0], parts[1]))
    return merges


def _added_tokens(tok: Tokenizer) -> list[dict]:
    return [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for s, i in tok.special_ids.items()]


def tokenizer_json(tok: Tokenizer, vocab: dict[str, int], merges: list[list[str]]) -> dict:
    """The fast-tokenizer ``tokenizer.json`` equivalent to ``tok``."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": _added_tokens(tok),
        "normalizer": {"type": "NFC"} if tok.nfc else None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tok.pattern}, "behavior": "Isolated", "invert": False},
            byte_level,
        ]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": True, "vocab": vocab, "merges": merges},
    }


def tokenizer_config(tok: Tokenizer) -> dict:
    """``tokenizer_config.json``: class, special tokens and the ChatML chat template."""
    from qwen_cli.tokenizer import ENDOFTEXT, IM_END, IM_START, QWEN_PATTERN

    return {
        "tokenizer_class": "Qwen2Tokenizer" if tok.pattern == QWEN_PATTERN else "PreTrainedTokenizerFast",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": None,
        "eos_token": ENDOFTEXT,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "additional_special_tokens": [IM_START, IM_END],
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "split_special_tokens": False,
        "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"}
                                 for t in _added_tokens(tok)},
        "chat_template": CHAT_TEMPLATE,
        "qwen_cli_tokenizer_hash": tok.hash,
    }


def hf_files(tok: Tokenizer) -> dict[str, bytes]:
    """File name -> content for the Hugging Face tokenizer files of ``tok``."""
    vocab = {to_unicode(token): rank for token, rank in tok.ranks.items()}
    merges = [[to_unicode(a), to_unicode(b)] for a, b in derive_merges(tok.ranks)]

    def dump(obj: object) -> bytes:
        return (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode()

    return {
        "vocab.json": json.dumps(vocab, ensure_ascii=False).encode(),
        "merges.txt": ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode(),
        "tokenizer.json": json.dumps(tokenizer_json(tok, vocab, merges), ensure_ascii=False).encode(),
        "tokenizer_config.json": dump(tokenizer_config(tok)),
    }
