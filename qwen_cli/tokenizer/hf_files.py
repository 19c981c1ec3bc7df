"""Hugging Face tokenizer files, both directions: written for our tokenizer, read from any Qwen-style one.

tiktoken ranks are over raw bytes; Hugging Face byte-level BPE spells each byte as a
printable character (GPT-2's bytes-to-unicode map) and needs an explicit merge list. The
merge for a token is recovered from the ranks: run tiktoken's BPE on the token's own bytes
using only lower ranks; it ends in exactly two parts, and listing those pairs in rank order
reproduces tiktoken's choices. Files written: ``vocab.json``, ``merges.txt``,
``tokenizer.json`` (fast tokenizer, NFC + the same split pattern + byte level) and
``tokenizer_config.json`` (``Qwen2Tokenizer`` when the pattern is Qwen's, eos = pad =
``<|endoftext|>`` like Qwen2 base models, and a ChatML ``chat_template``).

Reading: :func:`tiktoken_equivalent` recognises a ``tokenizer.json`` that provably tokenises like
our tiktoken tokenizer (the structure written here, Qwen's specials at their ids), so it can take
the fast path; any other is read by :mod:`qwen_cli.tokenizer.hf_tokenizer`. A bare ``vocab.json``
is read only when it is Qwen's own vocabulary (:func:`qwen_vocab_json`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from qwen_cli.errors import UserError
from qwen_cli.tokenizer.vocabulary import (
    CL100K_PATTERN,
    ENDOFTEXT,
    IM_END,
    IM_START,
    QWEN_PATTERN,
    SPECIAL_TOKENS,
    qwen_ranks_path,
    read_ranks,
)

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
TIKTOKEN_PATTERNS = (QWEN_PATTERN, CL100K_PATTERN)  # split patterns tiktoken and tokenizers agree on


@dataclass
class HFVocabulary:
    """A ``tokenizer.json`` in tiktoken terms: ranks (= ids), split pattern, NFC."""

    ranks: dict[bytes, int]
    pattern: str = QWEN_PATTERN
    nfc: bool = True


def _ranks_from_vocab(vocab: dict) -> dict[bytes, int] | None:
    """GPT-2 byte-level spellings -> bytes; None unless every token is byte-level and ids are 0..N-1."""
    to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
    try:
        ranks = {bytes(to_byte[c] for c in token): int(rank) for token, rank in vocab.items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return ranks if sorted(ranks.values()) == list(range(len(ranks))) else None


def _byte_level(item) -> bool:
    """A ByteLevel step that only maps bytes (no prefix space, no regex of its own)."""
    return (isinstance(item, dict) and item.get("type") == "ByteLevel" and not item.get("add_prefix_space")
            and not item.get("use_regex", True))


def _merge_pair(merge) -> tuple[str, str]:
    return tuple(merge.split(" ", 1)) if isinstance(merge, str) else tuple(merge)


def _merges_in_id_order(vocab: dict, merges: list) -> bool:
    """Each merge makes a token with a higher id than the previous one: merge order = rank order."""
    previous = -1
    for merge in merges:
        rank = vocab.get("".join(_merge_pair(merge)))
        if rank is None or rank <= previous:
            return False
        previous = rank
    return True


def tiktoken_equivalent(path: Path) -> HFVocabulary | None:
    """The tiktoken form of a ``tokenizer.json`` when it provably tokenises like our tiktoken
    :class:`~qwen_cli.tokenizer.core.Tokenizer`, else None (then the ``tokenizers`` library reads it).

    Proven means: the structure :func:`tokenizer_json` writes (normalizer NFC or none; pre-tokenizer
    a Split on Qwen's or cl100k's pattern then a bytes-only ByteLevel; BPE with ``ignore_merges``, no
    dropout/unk/byte fallback/affixes; merges in id order, so ids are tiktoken ranks; ByteLevel
    decoder and no post-processor adding tokens) and exactly Qwen's specials at ids N, N+1, ...
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data["model"]
        vocab, merges = model["vocab"], model.get("merges") or []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a Hugging Face tokenizer file ({exc})") from None
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    split = steps[0] if isinstance(steps, list) and len(steps) == 2 else {}
    pattern = (split.get("pattern") or {}).get("Regex") if isinstance(split, dict) else None
    normalizer = data.get("normalizer")
    post = data.get("post_processor")
    simple_bpe = (model.get("type") == "BPE" and model.get("ignore_merges") is True and not model.get("dropout")
                  and not model.get("unk_token") and not model.get("byte_fallback")
                  and not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix"))
    shaped = (simple_bpe and normalizer in (None, {"type": "NFC"}) and pattern in TIKTOKEN_PATTERNS
              and split.get("type") == "Split" and split.get("behavior") == "Isolated" and not split.get("invert")
              and _byte_level(steps[1]) and _byte_level(data.get("decoder")) and (post is None or _byte_level(post)))
    if not shaped or not isinstance(vocab, dict):
        return None
    ranks = _ranks_from_vocab(vocab)
    if ranks is None or not _merges_in_id_order(vocab, merges):
        return None
    added = [(t.get("content"), t.get("id"), t.get("special")) for t in data.get("added_tokens") or []]
    if added != [(name, len(ranks) + i, True) for i, name in enumerate(SPECIAL_TOKENS)]:
        return None
    return HFVocabulary(ranks, pattern, normalizer is not None)


def qwen_vocab_json(directory: Path) -> dict[bytes, int]:
    """The ranks of a bare ``vocab.json`` (no ``tokenizer.json``): read only when they are Qwen's own,
    since the file says nothing of the split pattern, normalisation or specials."""
    path = directory / VOCAB_JSON
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a byte-level BPE vocab.json ({exc})") from None
    ranks = _ranks_from_vocab(vocab) if isinstance(vocab, dict) else None
    if ranks is None or ranks != read_ranks(qwen_ranks_path()):
        raise UserError(f"{path}: without {TOKENIZER_JSON} only Qwen's own vocabulary is read (a vocab.json "
                        f"does not say how text is split); add the model's {TOKENIZER_JSON}")
    return ranks
