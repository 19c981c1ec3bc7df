"""Hugging Face tokenizer files, both directions: written for our tokenizer, read from any Qwen-style one.

tiktoken ranks are over raw bytes; Hugging Face byte-level BPE spells each byte as a
printable character (GPT-2's bytes-to-unicode map) and needs an explicit merge list. The
merge for a token is recovered from the ranks: run tiktoken's BPE on the token's own bytes
using only lower ranks; it ends in exactly two parts, and listing those pairs in rank order
reproduces tiktoken's choices. Files written: ``vocab.json``, ``merges.txt``,
``tokenizer.json`` (fast tokenizer, NFC + the same split pattern + byte level) and
``tokenizer_config.json`` (``Qwen2Tokenizer`` when the pattern is Qwen's, eos = pad =
``<|endoftext|>`` like Qwen2 base models, and a ChatML ``chat_template``).

Reading (:func:`read_hf_vocabulary`) takes a released Qwen2-family directory: ``tokenizer.json``
when present (its split pattern and NFC setting are used; ``<|endoftext|>``, ``<|im_start|>``,
``<|im_end|>`` must follow the BPE tokens, and merges must come in increasing id order, so a
token's id *is* its tiktoken rank — checked, never assumed), else a bare ``vocab.json`` (Qwen's
pattern and specials assumed). Later special tokens (Qwen2.5's tool and vision markers) keep
their ids and are named ``<|extra_N|>`` by our tokenizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from qwen_cli.errors import UserError
from qwen_cli.tokenizer.vocabulary import ENDOFTEXT, IM_END, IM_START, QWEN_PATTERN, SPECIAL_TOKENS

if TYPE_CHECKING:
    from qwen_cli.tokenizer.core import Tokenizer

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


TOKENIZER_JSON = "tokenizer.json"
VOCAB_JSON = "vocab.json"


@dataclass
class HFVocabulary:
    """What a Hugging Face tokenizer directory says about a byte-level BPE: ranks, split pattern, NFC."""

    ranks: dict[bytes, int]
    pattern: str = QWEN_PATTERN
    nfc: bool = True


def has_hf_vocabulary(directory: Path) -> bool:
    return (directory / TOKENIZER_JSON).is_file() or (directory / VOCAB_JSON).is_file()


def _ranks_from_vocab(vocab: dict, path: Path) -> dict[bytes, int]:
    """GPT-2 byte-level spellings -> bytes; ids must be unique and contiguous from 0."""
    to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
    try:
        ranks = {bytes(to_byte[c] for c in token): int(rank) for token, rank in vocab.items()}
    except KeyError as exc:
        raise UserError(f"{path}: token with non byte-level character {exc.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{path}: not a byte-level BPE vocabulary ({exc})") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise UserError(f"{path}: vocabulary ids are not unique and contiguous from 0")
    return ranks


def _split_pattern(pre_tokenizer: dict | None) -> str | None:
    """The regex of the first ``Split`` pre-tokenizer, if any."""
    if not pre_tokenizer:
        return None
    for item in pre_tokenizer.get("pretokenizers", [pre_tokenizer]):
        if item.get("type") == "Split":
            return item.get("pattern", {}).get("Regex")
    return None


def _merge_pair(merge) -> tuple[str, str]:
    return tuple(merge.split(" ", 1)) if isinstance(merge, str) else tuple(merge)


def _read_tokenizer_json(path: Path) -> HFVocabulary:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data["model"]
        vocab, merges = model["vocab"], model.get("merges", [])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a Hugging Face tokenizer file ({exc})") from None
    if model.get("type") != "BPE":
        raise UserError(f"{path}: tokenizer model {model.get('type')!r} is not byte-level BPE")
    ranks = _ranks_from_vocab(vocab, path)
    previous = -1
    for merge in merges:
        left, right = _merge_pair(merge)
        rank = vocab.get(left + right)
        if rank is None or rank <= previous:
            raise UserError(f"{path}: merge {left!r} {right!r} is out of id order; "
                            "the vocabulary cannot be read as tiktoken ranks")
        previous = rank
    specials = {t["content"]: t["id"] for t in data.get("added_tokens", [])}
    for offset, name in enumerate(SPECIAL_TOKENS[:3]):
        if specials.get(name) != len(ranks) + offset:
            raise UserError(f"{path}: special token {name} is not id {len(ranks) + offset} "
                            f"(found {specials.get(name)}); not a Qwen vocabulary")
    nfc = (data.get("normalizer") or {}).get("type") == "NFC"
    return HFVocabulary(ranks, _split_pattern(data.get("pre_tokenizer")) or QWEN_PATTERN, nfc)


def read_hf_vocabulary(directory: Path) -> HFVocabulary:
    """The vocabulary of ``directory``'s ``tokenizer.json`` (preferred) or ``vocab.json``; UserError
    naming the file when it is not a Qwen-style byte-level BPE."""
    path = directory / TOKENIZER_JSON
    if path.is_file():
        return _read_tokenizer_json(path)
    path = directory / VOCAB_JSON
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{directory}: no tokenizer ({TOKENIZER_JSON} or {VOCAB_JSON})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a byte-level BPE vocab.json ({exc})") from None
    if not isinstance(vocab, dict):
        raise UserError(f"{path}: not a byte-level BPE vocab.json (not a JSON object)")
    return HFVocabulary(_ranks_from_vocab(vocab, path))
