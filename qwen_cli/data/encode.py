"""Encode a corpus into shuffled, memory-mappable token shards (``qwen tokenize encode``).

Shard directory format (``format: "qwen_cli.shards/1"``), written atomically (temporary
directory, every file fsynced, then renamed into place)::

    OUT/
      manifest.json
      tokenizer/               the tokenizer (tokenizer.tiktoken + qwen_tokenizer.json)
      train/shard_00000.bin    raw little-endian uint32 token ids
      train/shard_00001.bin
      val/shard_00000.bin

Each ``.bin`` file is documents concatenated, every document followed by ``<|endoftext|>``
(``manifest["eot_id"]``); no header, so ``numpy.memmap(path, dtype="<u4", mode="r")`` reads
it. A document never straddles two shards (a shard ends with ``<|endoftext|>``); shards hold
up to ``shard_tokens`` ids unless a single document is longer. Documents are shuffled with
``seed``; the first ``round(val_fraction * documents)`` of the shuffled order (at least one
when ``val_fraction > 0``) form the ``val`` split, the rest ``train``: the splits share no
document. Packing into training sequences happens when reading (``qwen_cli.data.shards``),
so one encoding serves any context length.

``manifest.json`` keys: ``format``, ``dtype`` (``"uint32"``), ``byte_order`` (``"little"``),
``eot_id``, ``tokenizer`` (``hash``, ``dir`` = ``"tokenizer"``, ``name``, ``vocab_size``,
``padded_vocab_size``), ``seed``, ``val_fraction``, ``documents``, ``tokens``, ``splits`` →
``train``/``val`` → (``documents``, ``tokens``, ``shards`` → list of ``{"file":
"train/shard_00000.bin", "tokens": N}``), ``sources`` (per input: kind, files, documents,
bytes), ``skipped`` (reason → count), ``ignored_files``, ``text_field``, ``text_unit``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path

import numpy as np

from qwen_cli.corpus import ReadStats, input_bytes, iter_documents
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_dir
from qwen_cli.tokenizer import Tokenizer, load_tokenizer

FORMAT = "qwen_cli.shards/1"
DTYPE = np.dtype("<u4")
MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"
SPLITS = ("train", "val")
DEFAULT_SHARD_TOKENS = 1 << 26
BATCH_BYTES = 1 << 20

_worker_tok: Tokenizer | None = None


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of a shard directory, with a ``UserError`` naming the problem if unusable."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found (is {directory} a shard directory from 'qwen tokenize encode'?)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable manifest ({exc})") from None
    if manifest.get("format") != FORMAT or manifest.get("dtype") != "uint32":
        raise UserError(f"{path}: unsupported shard format {manifest.get('format')!r} (expected {FORMAT})")
    return manifest


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the platform reports it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _init_worker(tokenizer_dir: str) -> None:
    global _worker_tok
    _worker_tok = load_tokenizer(tokenizer_dir)


def _encode_batch(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Encode a batch in a worker: all ids (each document + eot) and per-document lengths."""
    assert _worker_tok is not None
    return _encode_with(_worker_tok, texts)


def _encode_with(tok: Tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    docs = [tok.encode(t) for t in texts]
    for d in docs:
        d.append(tok.eot_id)
    lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
    ids = np.fromiter(chain.from_iterable(docs), dtype=DTYPE, count=int(lengths.sum()))
    return ids, lengths


def _batches(docs: Iterable[str], on_bytes: Callable[[int], None]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for doc in docs:
        batch.append(doc)
        size += len(doc.encode("utf-8", errors="surrogatepass"))
        if size >= BATCH_BYTES:
            on_bytes(size)
            yield batch
            batch, size = [], 0
    if batch:
        on_bytes(size)
        yield batch


def _encode_all(batches: Iterator[list[str]], tok: Tokenizer, tokenizer_dir: Path, workers: int,
                flat_path: Path) -> np.ndarray:
    """Encode every batch into ``flat_path`` in input order; returns the document lengths.

    Batches are read in this process and encoded by ``workers`` spawned processes, with a
    bounded number in flight, so bad input raises here and memory stays small.
    """
    lengths: list[np.ndarray] = []
    with open(flat_path, "wb") as flat:

        def write(result: tuple[np.ndarray, np.ndarray]) -> None:
            result[0].tofile(flat)
            lengths.append(result[1])

        if workers <= 1:
            for batch in batches:
                write(_encode_with(tok, batch))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(str(tokenizer_dir),)) as pool:
                pending: deque = deque()
                for batch in batches:
                    pending.append(pool.apply_async(_encode_batch, (batch,)))
                    if len(pending) > 2 * workers:
                        write(pending.popleft().get())
                while pending:
                    write(pending.popleft().get())
    return np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)


def _split_order(n_docs: int, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    if n_docs == 0:
        raise UserError("no documents in the inputs (all empty or skipped)")
    n_val = 0
    if val_fraction > 0:
        if n_docs < 2:
            raise UserError("only one document: cannot hold out a validation split "
                            "(use --val-fraction 0, or --text-unit paragraph|line)")
        n_val = min(max(1, round(val_fraction * n_docs)), n_docs - 1)
    order = np.random.default_rng(seed).permutation(n_docs)
    return {"val": order[:n_val], "train": order[n_val:]}


def _write_split(split: str, docs: np.ndarray, flat: np.ndarray, offsets: np.ndarray, root: Path,
                 shard_tokens: int, on_tokens: Callable[[int], None]) -> dict:
    (root / split).mkdir()
    shards: list[dict] = []
    buffer = np.empty(shard_tokens, dtype=DTYPE)
    fill = 0

    def close() -> None:
        nonlocal fill
        name = f"{split}/shard_{len(shards):05d}.bin"
        buffer[:fill].tofile(root / name)
        shards.append({"file": name, "tokens": int(fill)})
        on_tokens(fill)
        fill = 0

    for d in docs:
        start, end = int(offsets[d]), int(offsets[d + 1])
        n = end - start
        if fill and fill + n > shard_tokens:
            close()
        if n > buffer.size:
            buffer = np.empty(n, dtype=DTYPE)
        buffer[fill:fill + n] = flat[start:end]
        fill += n
    if fill:
        close()
    return {"documents": int(docs.size), "tokens": int(sum(s["tokens"] for s in shards)), "shards": shards}


def encode_corpus(inputs: list[str], tokenizer: str, out: str | os.PathLike, *, text_field: str = "text",
                  val_fraction: float = 0.01, seed: int = 0, workers: int | None = None,
                  shard_tokens: int = DEFAULT_SHARD_TOKENS, on_error: str = "error",
                  text_unit: str = "document", overwrite: bool = False, progress=None) -> dict:
    """Read, encode, shuffle, split and write shards; returns the manifest.

    ``workers`` encoding processes (at most the available cores; default: all of them, at most 8).
    ``progress`` is an optional object with ``start(phase, total, unit="bytes")`` and
    ``advance(n)`` (the CLI passes a rich progress bar adapter).
    """
    if shard_tokens < 1:
        raise UserError(f"--shard-tokens must be positive, not {shard_tokens}")
    if not 0 <= val_fraction < 1:  # checked before reading anything, not after encoding it all
        raise UserError(f"--val-fraction must be in [0, 1), not {val_fraction}")
    if seed < 0:
        raise UserError(f"--seed must be >= 0, not {seed}")
    tok = load_tokenizer(tokenizer)
    workers = max(1, min(workers if workers is not None else 8, available_cores()))
    stats = ReadStats()
    docs = iter_documents(inputs, stats, text_field=text_field, on_error=on_error, text_unit=text_unit)
    total_bytes = input_bytes(inputs)
    advance = progress.advance if progress else (lambda n: None)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        tok.save(tmp / TOKENIZER_DIR, hf=False)
        if progress:
            progress.start("encoding", total_bytes)
        flat_path = tmp / "unshuffled.tmp"
        lengths = _encode_all(_batches(docs, advance), tok, tmp / TOKENIZER_DIR, workers, flat_path)
        order = _split_order(lengths.size, val_fraction, seed)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.memmap(flat_path, dtype=DTYPE, mode="r") if offsets[-1] else np.zeros(0, DTYPE)
        if progress:
            progress.start("writing shards", int(offsets[-1]), "tokens")
        splits = {s: _write_split(s, order[s], flat, offsets, tmp, shard_tokens, advance) for s in SPLITS}
        del flat
        flat_path.unlink()
        manifest = {
            "format": FORMAT,
            "dtype": "uint32",
            "byte_order": "little",
            "eot_id": tok.eot_id,
            "tokenizer": {"hash": tok.hash, "dir": TOKENIZER_DIR, "name": tok.name,
                          "vocab_size": tok.vocab_size, "padded_vocab_size": tok.padded_vocab_size},
            "seed": seed,
            "val_fraction": val_fraction,
            "documents": int(lengths.size),
            "tokens": int(offsets[-1]),
            "splits": splits,
            "text_field": text_field,
            "text_unit": text_unit,
            **stats.as_dict(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
