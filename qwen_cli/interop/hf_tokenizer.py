"""Our tokenizer from a released Qwen2-family ``tokenizer.json`` (byte-level BPE, no ``qwen.tiktoken``).

Qwen2 ships its vocabulary as a Hugging Face fast tokenizer: ``model.vocab`` spells each token
in GPT-2 byte-level characters with its id, ``model.merges`` lists merges, ``added_tokens``
holds ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` right after the BPE tokens, and the
pre-tokenizer carries the split pattern. The vocabulary was made with tiktoken, so a token's id
*is* its tiktoken rank; this is checked (merges must produce tokens in increasing id order),
never assumed. Later special tokens (Qwen2.5's tool and vision markers) keep their ids and
are named ``<|extra_N|>`` by our tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

from qwen_cli.errors import UserError
from qwen_cli.tokenizer import QWEN_PATTERN, SPECIAL_TOKENS, Tokenizer
from qwen_cli.tokenizer_hf import bytes_to_unicode

TOKENIZER_JSON = "tokenizer.json"


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


def tokenizer_from_hf_json(directory: Path) -> Tokenizer:
    """Build our tokenizer from ``directory/tokenizer.json``; UserError if it is not a Qwen-style BPE."""
    path = directory / TOKENIZER_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data["model"]
        vocab, merges = model["vocab"], model.get("merges", [])
    except FileNotFoundError:
        raise UserError(f"{directory}: no tokenizer (qwen_tokenizer.json, qwen.tiktoken or {TOKENIZER_JSON})") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a Hugging Face tokenizer file ({exc})") from None
    if model.get("type") != "BPE":
        raise UserError(f"{path}: tokenizer model {model.get('type')!r} is not byte-level BPE")
    to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
    try:
        ranks = {bytes(to_byte[c] for c in token): rank for token, rank in vocab.items()}
    except KeyError as exc:
        raise UserError(f"{path}: token with non byte-level character {exc.args[0]!r}") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise UserError(f"{path}: vocabulary ids are not unique and contiguous from 0")
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
    return Tokenizer(ranks, pattern=_split_pattern(data.get("pre_tokenizer")) or QWEN_PATTERN,
                     name=directory.name, nfc=nfc)
