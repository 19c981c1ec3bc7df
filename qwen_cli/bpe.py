"""Learning a Qwen-style byte-level BPE vocabulary (``qwen tokenize train``).

Both modes pre-tokenize with Qwen's split pattern (digits stay single), work on UTF-8 bytes
(every byte is a token, so any text round-trips) and end as tiktoken ranks with the Qwen
specials appended after them.

- From scratch (``base="none"``): Hugging Face ``tokenizers``' BPE trainer (Rust, all cores)
  on NFC text with the Qwen split + byte-level alphabet. Its merges are turned into tiktoken
  ranks: the 256 single bytes first in GPT-2 order (as in cl100k and qwen), then each merge's
  concatenated bytes in merge order.
- Extension (``base="cl100k"``), the way Qwen grew cl100k: every cl100k rank is kept as is.
  Each distinct pre-token of the corpus is encoded with the current ranks, and the most
  frequent adjacent pair is appended as a new rank, repeatedly, until the vocabulary is full.
  After each merge the affected words continue merging with all ranks (old ones included),
  as tiktoken would, so every learned token is one that tiktoken actually produces.
"""

from __future__ import annotations

import heapq
import json
import os
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import pairwise
from pathlib import Path

from qwen_cli.data.sources import ReadStats, input_bytes, iter_documents
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_dir
from qwen_cli.tokenizer import (
    QWEN_PATTERN,
    SPECIAL_TOKENS,
    Tokenizer,
    cl100k_ranks_path,
    padded_size,
    read_ranks,
)
from qwen_cli.tokenizer_hf import byte_order, bytes_to_unicode

BASES = ("none", "cl100k")


def _hf_trainer_tokenizer():
    from tokenizers import Regex, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer(models.BPE())
    hf.normalizer = normalizers.NFC()
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    return hf


def train_from_scratch(docs: Iterable[str], num_ranks: int) -> dict[bytes, int]:
    """Ranks learned by the HF BPE trainer on ``docs`` (at most ``num_ranks``, 256 bytes included)."""
    from tokenizers import pre_tokenizers, trainers

    hf = _hf_trainer_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=num_ranks, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    hf.train_from_iterator(docs, trainer=trainer)
    merges = json.loads(hf.to_str())["model"]["merges"]
    decode = {ch: b for b, ch in bytes_to_unicode().items()}
    ranks = {bytes([b]): i for i, b in enumerate(byte_order())}
    for merge in merges:
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        token = bytes(decode[c] for c in left + right)
        if token not in ranks and len(ranks) < num_ranks:
            ranks[token] = len(ranks)
    return ranks


class _PairIndex:
    """Words (rank sequences with counts) and a max-heap of their adjacent-pair frequencies."""

    def __init__(self, words: list[list[int]], counts: list[int]) -> None:
        self.words, self.counts = words, counts
        self.pair_count: Counter = Counter()
        self.where: dict[tuple[int, int], set[int]] = {}
        for w, word in enumerate(words):
            for pair, n in Counter(pairwise(word)).items():
                self.pair_count[pair] += n * counts[w]
                self.where.setdefault(pair, set()).add(w)
        self.heap = [(-c, p) for p, c in self.pair_count.items()]
        heapq.heapify(self.heap)

    def best(self) -> tuple[tuple[int, int], int] | None:
        """The most frequent pair (ties: smallest ranks) with its count, or None."""
        while self.heap:
            neg, pair = self.heap[0]
            if self.pair_count.get(pair, 0) == -neg:
                return pair, -neg
            heapq.heappop(self.heap)
        return None

    def rewrite(self, pair: tuple[int, int], rewrite_word: Callable[[list[int]], list[int]]) -> None:
        """Replace every word containing ``pair`` by ``rewrite_word(word)``, updating pair counts."""
        changed: set[tuple[int, int]] = set()
        for w in self.where.pop(pair, set()):
            old_pairs = Counter(pairwise(self.words[w]))
            if pair not in old_pairs:  # a stale entry: the word changed since it was indexed
                continue
            self.words[w] = rewrite_word(self.words[w])
            new_pairs = Counter(pairwise(self.words[w]))
            for p in old_pairs.keys() | new_pairs.keys():
                delta = (new_pairs[p] - old_pairs[p]) * self.counts[w]
                if delta:
                    total = self.pair_count[p] + delta
                    if total > 0:
                        self.pair_count[p] = total
                        changed.add(p)
                    else:
                        del self.pair_count[p]
                if p in new_pairs and (p not in old_pairs or p == pair):
                    self.where.setdefault(p, set()).add(w)
        for p in changed:
            heapq.heappush(self.heap, (-self.pair_count[p], p))


def _continue_bpe(parts: list[bytes], ranks: dict[bytes, int]) -> list[bytes]:
    """tiktoken's merge loop from ``parts``: merge the lowest-ranked adjacent pair until none is left."""
    while len(parts) > 1:
        best_rank, best_i = None, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best_i = rank, i
        if best_i < 0:
            break
        parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def _merge_word(word: list[int], pair: tuple[int, int], new_id: int, vocab: dict[int, bytes],
                ranks: dict[bytes, int]) -> list[int]:
    """``word`` with every ``pair`` replaced by ``new_id``, then merged further if tiktoken would."""
    left, right = pair
    merged: list[int] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == left and word[i + 1] == right:
            merged.append(new_id)
            i += 2
        else:
            merged.append(word[i])
            i += 1
    around_new = (p for p in pairwise(merged) if new_id in p)
    if any(vocab[a] + vocab[b] in ranks for a, b in around_new):
        return [ranks[p] for p in _continue_bpe([vocab[i] for i in merged], ranks)]
    return merged


def extend_ranks(base: dict[bytes, int], docs: Iterable[str], num_ranks: int, pattern: str = QWEN_PATTERN,
                 progress=None) -> dict[bytes, int]:
    """``base`` plus up to ``num_ranks - len(base)`` merges learned on ``docs`` (ids of ``base`` kept).

    ``progress`` (optional) gets ``start("learning merges", total, "merges")`` and ``advance(1)`` per merge.
    """
    import regex
    import tiktoken

    splitter = regex.compile(pattern)
    word_counts: Counter = Counter()
    for doc in docs:
        word_counts.update(splitter.findall(unicodedata.normalize("NFC", doc)))
    enc = tiktoken.Encoding("base", pat_str=pattern, mergeable_ranks=base, special_tokens={})
    words, counts = [], []
    for text, count in word_counts.items():
        ids = enc.encode_ordinary(text)
        if len(ids) > 1:
            words.append(ids)
            counts.append(count)
    index = _PairIndex(words, counts)
    ranks = dict(base)
    vocab = {rank: token for token, rank in ranks.items()}
    if progress:
        progress.start("learning merges", num_ranks - len(ranks), "merges")

    while len(ranks) < num_ranks:
        found = index.best()
        if found is None or found[1] < 2:
            break
        pair, new_id = found[0], len(ranks)
        vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
        ranks[vocab[new_id]] = new_id
        index.rewrite(pair, lambda word, pair=pair, new_id=new_id: _merge_word(word, pair, new_id, vocab, ranks))
        if progress:
            progress.advance(1)
    return ranks


def _tracked(docs: Iterable[str], advance: Callable[[int], None]) -> Iterator[str]:
    for doc in docs:
        advance(len(doc.encode("utf-8", errors="surrogatepass")))
        yield doc


def train_tokenizer(corpus: list[str], vocab_size: int, out: str | os.PathLike, *, base: str = "none",
                    text_field: str = "text", text_unit: str = "document", on_error: str = "error",
                    overwrite: bool = False, progress=None) -> dict:
    """Learn a vocabulary of ``vocab_size`` tokens (ranks + Qwen specials) and save it to ``out``."""
    if base not in BASES:
        raise UserError(f"--base must be one of {', '.join(BASES)}, not {base!r}")
    base_ranks = read_ranks(cl100k_ranks_path()) if base == "cl100k" else {}
    num_ranks = vocab_size - len(SPECIAL_TOKENS)
    smallest = max(len(base_ranks), 256) + 1
    if num_ranks < smallest:
        raise UserError(f"--vocab-size must be at least {smallest + len(SPECIAL_TOKENS)} with --base {base} "
                        f"({len(SPECIAL_TOKENS)} of it are special tokens)")
    stats = ReadStats()
    docs = iter_documents(corpus, stats, text_field=text_field, on_error=on_error, text_unit=text_unit)
    start = time.perf_counter()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        if progress:
            progress.start("reading and counting", input_bytes(corpus))
        docs = _tracked(docs, progress.advance if progress else (lambda n: None))
        if base == "none":
            ranks = train_from_scratch(docs, num_ranks)
        else:
            ranks = extend_ranks(base_ranks, docs, num_ranks, progress=progress)
        if not any(s.documents for s in stats.sources):
            raise UserError("no documents in the corpus (all empty or skipped)")
        tok = Tokenizer(ranks, QWEN_PATTERN, name=Path(out).name)
        tok.save(tmp)
    seconds = time.perf_counter() - start
    return {
        "out": str(out), "base": base, "vocab_size": tok.vocab_size, "num_ranks": tok.num_ranks,
        "num_specials": len(SPECIAL_TOKENS), "padded_vocab_size": padded_size(tok.vocab_size),
        "new_ranks": tok.num_ranks - len(base_ranks), "hash": tok.hash, "seconds": round(seconds, 2),
        "documents": sum(s.documents for s in stats.sources), "bytes": sum(s.bytes for s in stats.sources),
        **stats.as_dict(),
    }
