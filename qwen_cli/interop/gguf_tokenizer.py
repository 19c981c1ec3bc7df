"""A GGUF file's tokenizer as Hugging Face files: ``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json`` and ``generation_config.json``, built with the ``tokenizers`` library.

Read from llama.cpp's metadata keys: ``tokenizer.ggml.model`` (only ``gpt2``, byte-level BPE, is
supported), ``tokens``, ``merges``, ``token_type`` (3 = control: a special token; 4 = user-defined:
an added token matched whole), ``bos/eos/padding/unknown_token_id``, ``add_bos_token``,
``tokenizer.ggml.pre`` (the split rule the merges were learned with) and ``tokenizer.chat_template``.

Pre-tokenizers follow llama.cpp's ``llama-vocab.cpp`` for each ``pre`` name: GPT-2's rule for
``default``/``gpt2``; ``smollm`` splits every digit first (``\\p{N}``), then GPT-2's rule, as
SmolLM's own ``tokenizer.json`` does (``Digits(individual_digits)`` + ``ByteLevel``); Llama-3 and
Qwen2 use their regexes. Any other ``pre`` is refused rather than tokenised by a wrong rule.

The metadata is untrusted: tokens must be strings, merges ``"left right"`` pairs of tokens, the
special ids (bos, eos, eot, eom, padding, unknown) indices into the token list and the chat template
a string, else a one-line ``UserError`` naming the key.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from qwen_cli.errors import UserError

_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLITS = {"llama3": _LLAMA3, "llama-v3": _LLAMA3, "llama-bpe": _LLAMA3, "qwen2": _QWEN2}
_GPT2_RULE = ("default", "gpt2", "gpt-2")
CONTROL, USER_DEFINED = 3, 4
ID_KEYS = ("bos_token_id", "eos_token_id", "eot_token_id", "eom_token_id", "padding_token_id", "unknown_token_id")


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the spelling of byte-level vocabularies)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


def _pre_tokenizer(pre: str, path: Path):
    if pre in _SPLITS:
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_SPLITS[pre]), behavior="isolated"),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    gpt2 = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), gpt2])
    if pre in _GPT2_RULE:
        return gpt2
    known = sorted({*_SPLITS, "smollm", *_GPT2_RULE})
    raise UserError(f"{path}: metadata tokenizer.ggml.pre {pre!r} is not a known split rule ({', '.join(known)})")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_metadata(meta: dict, path: Path) -> None:
    """Types and ranges of the tokenizer metadata (see the module docstring)."""
    tokens, merges = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.merges"]
    for key, values in (("tokens", tokens), ("merges", merges)):
        if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
            raise UserError(f"{path}: metadata tokenizer.ggml.{key} is not a list of strings")
    for key in ID_KEYS:
        index = meta.get(f"tokenizer.ggml.{key}")
        if index is not None and not (isinstance(index, int) and not isinstance(index, bool)
                                      and 0 <= index < len(tokens)):
            raise UserError(f"{path}: metadata tokenizer.ggml.{key} {_short(index)} is not an index into "
                            f"tokenizer.ggml.tokens ({len(tokens)} tokens)")
    template = meta.get("tokenizer.chat_template")
    if template is not None and not isinstance(template, str):
        raise UserError(f"{path}: metadata tokenizer.chat_template is not a string")


def build_tokenizer(meta: dict, path: Path) -> Tokenizer:
    """The byte-level BPE tokenizer the metadata describes (what ``transformers`` would tokenise with)."""
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise UserError(f"{path}: metadata tokenizer.ggml.model {kind!r} is not supported (gpt2 byte-level BPE only)")
    tokens, merges = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise UserError(f"{path}: metadata tokenizer.ggml.tokens / tokenizer.ggml.merges missing")
    _check_metadata(meta, path)
    spelling = _byte_alphabet()
    alphabet = set(spelling.values())
    vocab = {token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode()): index
             for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise UserError(f"{path}: metadata tokenizer.ggml.tokens has duplicate tokens")
    pairs = [tuple(merge.split(" ")) for merge in merges]
    for index, pair in enumerate(pairs):
        if len(pair) != 2 or not all(part in vocab for part in pair):
            raise UserError(f"{path}: metadata tokenizer.ggml.merges[{index}] {_short(merges[index])} is not "
                            "two tokens of tokenizer.ggml.tokens separated by one space")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
    tok.pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre", "default"), path)
    tok.decoder = decoders.ByteLevel()
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise UserError(f"{path}: metadata tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t, kind in zip(tokens, types, strict=True)
                            if kind == CONTROL and set(t) <= alphabet])
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t, kind in zip(tokens, types, strict=True)
                    if kind == USER_DEFINED and t in vocab])
    post = [processors.ByteLevel(trim_offsets=False)]
    bos = meta.get("tokenizer.ggml.bos_token_id")
    if meta.get("tokenizer.ggml.add_bos_token") and bos is not None:
        name = tokens[bos]
        post.append(processors.TemplateProcessing(single=f"{name}:0 $A:0", pair=f"{name}:0 $A:0 {name}:1 $B:1",
                                                  special_tokens=[(name, bos)]))
    tok.post_processor = processors.Sequence(post)
    return tok


def special_tokens(meta: dict) -> dict[str, str]:
    """``bos_token``, ``eos_token``, ``unk_token``, ``pad_token``: the strings of the metadata's special ids."""
    tokens = meta["tokenizer.ggml.tokens"]

    def token(key: str) -> str | None:
        index = meta.get(f"tokenizer.ggml.{key}")
        return tokens[index] if isinstance(index, int) and 0 <= index < len(tokens) else None

    specials = {name: token(key) for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                                                   ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id"))}
    return {name: value for name, value in specials.items() if value is not None}


def tokenizer_files(meta: dict, path: Path) -> dict[str, bytes]:
    """File name -> content of the Hugging Face tokenizer files (and generation config) for the GGUF."""
    tok = build_tokenizer(meta, path)
    specials = special_tokens(meta)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
              "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
              "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
              "model_max_length": meta.get(f"{meta.get('general.architecture')}.context_length", 2048), **specials}
    if meta.get("tokenizer.chat_template"):
        config["chat_template"] = meta["tokenizer.chat_template"]
    stops = [meta[f"tokenizer.ggml.{key}"] for key in ("eos_token_id", "eot_token_id", "eom_token_id")
             if isinstance(meta.get(f"tokenizer.ggml.{key}"), int)]
    generation = {"bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
                  "eos_token_id": list(dict.fromkeys(stops)) if len(set(stops)) > 1 else (stops or [None])[0],
                  "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"), "do_sample": False}

    def dump(obj: object) -> bytes:
        return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()

    return {"tokenizer.json": tok.to_str(pretty=True).encode() + b"\n",
            "tokenizer_config.json": dump(config), "special_tokens_map.json": dump(specials),
            "generation_config.json": dump({k: v for k, v in generation.items() if v is not None})}
