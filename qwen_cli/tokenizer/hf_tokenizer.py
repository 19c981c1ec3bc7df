"""Any Hugging Face tokenizer directory, tokenised exactly as ``transformers.AutoTokenizer`` does.

:class:`HFTokenizer` runs the directory's own ``tokenizer.json`` through the ``tokenizers``
library (the engine behind transformers' fast tokenizers): its normalizer, pre-tokenizer, model
and added tokens, every id as the file says. It offers the interface of our tiktoken
:class:`~qwen_cli.tokenizer.core.Tokenizer` (:class:`~qwen_cli.tokenizer.protocol.TextTokenizer`):

- ``encode`` is ``AutoTokenizer(dir, split_special_tokens=True).encode(text, add_special_tokens=False)``:
  no BOS/EOS added by the post-processor, and a special token's spelling in text is plain text
  (non-special added tokens still match, as in transformers);
- ``encode_with_specials(text, allowed)`` recognises the named specials (all of them: exactly
  transformers' default ``encode(text, add_special_tokens=False)``);
- ``decode`` is transformers' ``decode`` (special tokens kept, ``clean_up_tokenization_spaces`` as
  ``tokenizer_config.json`` says); ``stream_decoder`` emits text only once it stops changing.

The file is the truth, as for transformers' generic fast tokenizer (``PreTrainedTokenizerFast``),
vLLM and llama.cpp; transformers 5's model-specific classes (``GPT2Tokenizer``, ...) rebuild their
pipeline from their own definition instead, which agrees whenever the file matches the class (on
SmolLM2's tokenizer declared as ``GPT2Tokenizer``, 1 of 214 documents differs: transformers 5
drops its ``Digits`` pre-tokenizer).

Read beside ``tokenizer.json``: ``tokenizer_config.json`` (and ``special_tokens_map.json``) for
``eos_token``/``bos_token``/... and ``chat_template`` (``chat_template.jinja`` takes precedence, as
in transformers), ``generation_config.json`` for ``eos_token_id``. ``eot_id`` (document end, lm-eval's
eot) is transformers' ``eos_token_id``: ``eos_token``, else ``<|endoftext|>``/``<|end_of_text|>``/
``</s>``/``<eos>``, else the first generation eos id.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import tokenizers

from qwen_cli.errors import UserError
from qwen_cli.tokenizer.hf_files import TOKENIZER_JSON, bytes_to_unicode
from qwen_cli.tokenizer.vocabulary import ENDOFTEXT, IM_END, IM_START, padded_size, write_files

CONFIG_JSON = "tokenizer_config.json"
SPECIAL_MAP_JSON = "special_tokens_map.json"
TEMPLATE_FILE = "chat_template.jinja"
GENERATION_JSON = "generation_config.json"
SAVED_FILES = (TOKENIZER_JSON, CONFIG_JSON, SPECIAL_MAP_JSON, TEMPLATE_FILE)
TEMPLATE_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
END_OF_TEXT = (ENDOFTEXT, "<|end_of_text|>", "</s>", "<eos>")  # document ends, when no eos_token is configured
BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _read_json(path: Path) -> dict:
    """A JSON object file; {} when absent; a one-line UserError when unreadable."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a JSON object")
    return data


def _token_text(value) -> str | None:
    """A special-token entry of tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(directory: Path, config: dict) -> str | None:
    """The Jinja chat template: ``chat_template.jinja``, else ``tokenizer_config.json``'s (a string, or
    a list of named templates of which ``default`` is used)."""
    if (directory / TEMPLATE_FILE).is_file():
        return (directory / TEMPLATE_FILE).read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if template is not None and not isinstance(template, str):
        raise UserError(f"{directory / CONFIG_JSON}: chat_template is not a string")
    return template


def _eos_ids(path: Path, generation: dict) -> tuple[int, ...]:
    value = generation.get("eos_token_id")
    ids = [value] if isinstance(value, int) else value or []
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise UserError(f"{path}: eos_token_id must be an id or a list of ids")
    return tuple(ids)


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization`` (spaces before punctuation and contractions)."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


class TextStreamDecoder:
    """Incremental decoding by re-decoding a short window: a piece is emitted once its text no longer
    ends in U+FFFD (a split character), so the pieces join to ``decode`` of all ids for any decoder."""

    def __init__(self, tokenizer: HFTokenizer) -> None:
        self._decode = tokenizer.raw_decode
        self._ids: list[int] = []
        self._prefix = self._read = 0  # window start; ids before ``_read`` are already emitted

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        done = self._decode(self._ids[self._prefix:self._read])
        text = self._decode(self._ids[self._prefix:])
        if len(text) <= len(done) or text.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(done):]

    def flush(self) -> str:
        done = self._decode(self._ids[self._prefix:self._read])
        self._read = len(self._ids)
        return self._decode(self._ids[self._prefix:])[len(done):]


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` directory through the ``tokenizers`` library (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        self.name, self.source = directory.name, str(directory)
        self._files = {name: (directory / name).read_bytes() for name in SAVED_FILES if (directory / name).is_file()}
        path = directory / TOKENIZER_JSON
        try:
            self._tok = tokenizers.Tokenizer.from_str(self._files[TOKENIZER_JSON].decode("utf-8"))
        except KeyError:
            raise UserError(f"{directory}: no {TOKENIZER_JSON}") from None
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on a bad file
            raise UserError(f"{path}: not a Hugging Face tokenizer file ({str(exc).splitlines()[0]})") from None
        config = {**_read_json(directory / SPECIAL_MAP_JSON), **_read_json(directory / CONFIG_JSON)}
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values(), default=-1) + 1
        self.padded_vocab_size = padded_size(self.vocab_size)
        added = self._tok.get_added_tokens_decoder()
        self.special_ids = {t.content: i for i, t in sorted(added.items()) if t.special}
        self._added = {i: t.content for i, t in added.items()}
        self.hash = hashlib.sha256(self._files[TOKENIZER_JSON]).hexdigest()
        self.template_tokens = {key: text for key in TEMPLATE_TOKENS if (text := _token_text(config.get(key)))}
        self.chat_template = _chat_template(directory, config)
        self.generation_eos_ids = _eos_ids(directory / GENERATION_JSON, _read_json(directory / GENERATION_JSON))
        self.cleanup = bool(config.get("clean_up_tokenization_spaces", False))
        self.im_start_id, self.im_end_id = vocab.get(IM_START), vocab.get(IM_END)
        self.bos_id = vocab.get(self.template_tokens.get("bos_token", ""))
        eos = [vocab.get(self.template_tokens.get("eos_token", "")), *map(vocab.get, END_OF_TEXT),
               *self.generation_eos_ids]
        if all(i is None for i in eos):
            raise UserError(f"{directory / CONFIG_JSON}: no eos_token, and {path} has none of {', '.join(END_OF_TEXT)}")
        self.eot_id = next(i for i in eos if i is not None)
        self._byte_level = "ByteLevel" in repr(self._tok.decoder)  # GPT-2 characters stand for bytes
        self._unicode_bytes = {c: b for b, c in bytes_to_unicode().items()}

    def __repr__(self) -> str:
        return f"HFTokenizer(name={self.name!r}, vocab_size={self.vocab_size}, hash={self.hash[:12]})"

    def _encode(self, texts: list[str], specials: bool) -> list[list[int]]:
        self._tok.encode_special_tokens = not specials
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        """Ids of ordinary text; special-token spellings in ``text`` are encoded as plain text."""
        return self._encode([text], specials=False)[0]

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        """``encode`` for many texts (``tokenizers`` runs them in parallel itself)."""
        return self._encode(list(texts), specials=False)

    def encode_with_specials(self, text: str, allowed: Iterable[str]) -> list[int]:
        """Encode trusted template text; only the special tokens in ``allowed`` become special ids."""
        allowed_set = set(allowed)
        unknown = allowed_set - self.special_ids.keys()
        if unknown:
            raise ValueError(f"not special tokens of this tokenizer: {sorted(unknown)}")
        if allowed_set == self.special_ids.keys():
            return self._encode([text], specials=True)[0]
        ids: list[int] = []
        pattern = "|".join(map(re.escape, sorted(allowed_set, key=len, reverse=True)))
        for piece in re.split(f"({pattern})", text) if allowed_set else [text]:
            if piece in allowed_set:
                ids.append(self.special_ids[piece])
            elif piece:
                ids += self.encode(piece)
        return ids

    def _valid(self, ids: Iterable[int]) -> list[int]:
        return [i for i in ids if 0 <= i < self.vocab_size]

    def raw_decode(self, ids: Iterable[int]) -> str:
        """The decoder's text of ``ids``, special tokens kept, no clean-up."""
        return self._tok.decode(self._valid(ids), skip_special_tokens=False)

    def decode(self, ids: Iterable[int]) -> str:
        """transformers' ``decode(ids)``; padding ids (>= vocab_size) decode to nothing."""
        text = self.raw_decode(ids)
        return clean_up_tokenization(text) if self.cleanup else text

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one id: byte-level and ``<0xNN>`` tokens exactly, others as their decoded text."""
        if token_id in self._added:
            return self._added[token_id].encode()
        token = self._tok.id_to_token(token_id)
        if token is None:
            return b""
        if self._byte_level and all(c in self._unicode_bytes for c in token):
            return bytes(self._unicode_bytes[c] for c in token)
        if match := BYTE_TOKEN.fullmatch(token):
            return bytes([int(match.group(1), 16)])
        return token.replace("\u2581", " ").encode()

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Raw bytes of ``ids`` (the concatenated ``token_bytes``)."""
        return b"".join(self.token_bytes(i) for i in self._valid(ids))

    def stream_decoder(self) -> TextStreamDecoder:
        """A decoder for ids arriving one at a time that holds back split multi-byte characters."""
        return TextStreamDecoder(self)

    def save(self, directory: str | os.PathLike, hf: bool = True) -> None:
        """Write the tokenizer files as they were read (``hf`` is moot: they are the Hugging Face files)."""
        write_files(directory, self._files)
