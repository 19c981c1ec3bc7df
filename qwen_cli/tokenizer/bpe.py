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

Long pre-tokens are cut before counting. One regex match can be arbitrarily long (a line of
100K letters without a space or a mark, an unpunctuated CJK text, a DNA sequence), and merging
inside one word is quadratic in its length: the HF trainer shifts the word's symbol array for
every occurrence it merges, the extension re-runs tiktoken's loop over the whole word. So both
modes first cut every pre-token into pieces of ``MAX_PRETOKEN_CHARS`` characters (the last one
shorter), counted as separate words, which keeps training linear in the input. Such a run adds
nothing to a vocabulary that its pieces do not: only the pairs across a cut are lost. A corpus
without pre-tokens that long trains exactly as before (the longest in CPython's sources is 82
characters; a 499-character run of Chinese is in the ``charset_normalizer`` package).

Encoding is not capped: tiktoken (Qwen's own tokenizer is tiktoken with this pattern, no cap)
merges a whole pre-token, and cutting it would change ids. Old tiktoken releases were quadratic
on such pieces (openai/tiktoken#195); 0.14 is not: one piece of 1 MB of random letters encodes
in 1-2 s, 10 MB in about 40 s on a busy 2-core machine, tens of times slower per byte than
ordinary text (9 MB of Python source: about 1 s) but linear enough not to hang.
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

from qwen_cli.corpus import ReadStats, input_bytes, iter_documents
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_dir
from qwen_cli.tokenizer.core import Tokenizer
from qwen_cli.tokenizer.hf_files import byte_order, bytes_to_unicode
from qwen_cli.tokenizer.vocabulary import (
    QWEN_PATTERN,
    SPECIAL_TOKENS,
    cl100k_ranks_path,
    padded_size,
    read_ranks,
)

BASES = ("none", "cl100k")
MAX_PRETOKEN_CHARS = 1024
"""Pre-tokens longer than this are cut into pieces of this many characters before counting."""
_PIECES = rf"[\s\S]{{1,{MAX_PRETOKEN_CHARS}}}"  # the same cut as a regex (Oniguruma and ``regex``)


def _hf_trainer_tokenizer():
    from tokenizers import Regex, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer(models.BPE())
    hf.normalizer = normalizers.NFC()
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
        pre_tokenizers.Split(Regex(_PIECES), behavior="isolated"),
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


def cap_pretokens(pretokens: Iterable[str]) -> Iterator[str]:
    """``pretokens`` with each one longer than ``MAX_PRETOKEN_CHARS`` cut into pieces of that length."""
    for pretoken in pretokens:
        if len(pretoken) <= MAX_PRETOKEN_CHARS:
            yield pretoken
        else:
            yield from (pretoken[i:i + MAX_PRETOKEN_CHARS] for i in range(0, len(pretoken), MAX_PRETOKEN_CHARS))


def count_pretokens(docs: Iterable[str], pattern: str = QWEN_PATTERN) -> Counter:
    """How often each (capped) pre-token of the NFC ``docs`` occurs."""
    import regex

    splitter = regex.compile(pattern)
    counts: Counter = Counter()
    for doc in docs:
        counts.update(cap_pretokens(splitter.findall(unicodedata.normalize("NFC", doc))))
    return counts


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


def _occurrences(word: list[int], left: int, right: int) -> list[int]:
    """Start positions of non-overlapping ``(left, right)`` pairs in ``word``, left to right."""
    starts, i, last = [], 0, len(word) - 1
    while True:
        try:
            i = word.index(left, i, last)
        except ValueError:
            return starts
        if word[i + 1] == right:
            starts.append(i)
            i += 2
        else:
            i += 1


class _Merger:
    """Residual BPE over distinct words: pair counts, where each pair occurs, and a max-heap.

    Each merge touches only the words holding the pair and, inside them, only the pairs next
    to each occurrence (the whole word when the new token lets tiktoken merge further).
    """

    def __init__(self, words: list[list[int]], counts: list[int], ranks: dict[bytes, int]) -> None:
        self.words, self.counts, self.ranks = words, counts, ranks
        self.vocab = {rank: token for token, rank in ranks.items()}
        self.pair_count: Counter = Counter()
        self.where: dict[tuple[int, int], set[int]] = {}
        for w, word in enumerate(words):
            for pair, n in Counter(pairwise(word)).items():
                self.pair_count[pair] += n * counts[w]
                self.where.setdefault(pair, set()).add(w)
        self.heap = [(-c, p) for p, c in self.pair_count.items()]
        heapq.heapify(self.heap)

    def best(self) -> tuple[tuple[int, int], int] | None:
        """The most frequent pair (ties: smallest ids) with its count, or None."""
        while self.heap:
            neg, pair = self.heap[0]
            if self.pair_count.get(pair, 0) == -neg:
                return pair, -neg
            heapq.heappop(self.heap)
        return None

    def merge(self, pair: tuple[int, int]) -> None:
        """Append ``pair`` as a new rank and rewrite every word that holds it."""
        token = self.vocab[pair[0]] + self.vocab[pair[1]]
        new_id = len(self.ranks)
        self.ranks[token], self.vocab[new_id] = new_id, token
        delta: Counter = Counter()
        for w in self.where.pop(pair, set()):
            word = self.words[w]
            starts = _occurrences(word, *pair)
            if not starts:  # a stale entry: the word changed since it was indexed
                continue
            new, prev = [], 0
            for s in starts:
                new.extend(word[prev:s])
                new.append(new_id)
                prev = s + 2
            new.extend(word[prev:])
            positions = [s - k for k, s in enumerate(starts)]
            if self._merges_further(new, positions, token):
                new = [self.ranks[p] for p in _continue_bpe([self.vocab[i] for i in new], self.ranks)]
                removed, added = range(len(word) - 1), range(len(new) - 1)
            else:
                removed = {j for s in starts for j in (s - 1, s, s + 1) if 0 <= j < len(word) - 1}
                added = {j for q in positions for j in (q - 1, q) if 0 <= j < len(new) - 1}
            count = self.counts[w]
            for j in removed:
                delta[word[j], word[j + 1]] -= count
            for j in added:
                p = (new[j], new[j + 1])
                delta[p] += count
                self.where.setdefault(p, set()).add(w)
            self.words[w] = new
        for p, d in delta.items():
            total = self.pair_count.get(p, 0) + d
            if total > 0:
                self.pair_count[p] = total
                heapq.heappush(self.heap, (-total, p))
            else:
                self.pair_count.pop(p, None)

    def _merges_further(self, new: list[int], positions: list[int], token: bytes) -> bool:
        """Whether an existing rank joins the new token with a neighbour (tiktoken would merge it)."""
        for q in positions:
            if q > 0 and self.vocab[new[q - 1]] + token in self.ranks:
                return True
            if q + 1 < len(new) and token + self.vocab[new[q + 1]] in self.ranks:
                return True
        return False


def extend_ranks(base: dict[bytes, int], docs: Iterable[str], num_ranks: int, pattern: str = QWEN_PATTERN,
                 progress=None) -> dict[bytes, int]:
    """``base`` plus up to ``num_ranks - len(base)`` merges learned on ``docs`` (ids of ``base`` kept).

    ``progress`` (optional) gets ``start("learning merges", total, "merges")`` and ``advance(1)`` per merge.
    """
    import tiktoken

    word_counts = count_pretokens(docs, pattern)
    enc = tiktoken.Encoding("base", pat_str=pattern, mergeable_ranks=base, special_tokens={})
    words, counts = [], []
    for text, count in word_counts.items():
        ids = enc.encode_ordinary(text)
        if len(ids) > 1:
            words.append(ids)
            counts.append(count)
    ranks = dict(base)
    merger = _Merger(words, counts, ranks)
    if progress:
        progress.start("learning merges", num_ranks - len(ranks), "merges")
    while len(ranks) < num_ranks:
        found = merger.best()
        if found is None or found[1] < 2:
            break
        merger.merge(found[0])
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
        "out": str(out), "base": base, "requested_vocab_size": vocab_size, "vocab_size": tok.vocab_size,
        "num_ranks": tok.num_ranks,
        "num_specials": len(SPECIAL_TOKENS), "padded_vocab_size": padded_size(tok.vocab_size),
        "new_ranks": tok.num_ranks - len(base_ranks), "hash": tok.hash, "seconds": round(seconds, 2),
        "documents": sum(s.documents for s in stats.sources), "bytes": sum(s.bytes for s in stats.sources),
        **stats.as_dict(),
    }
