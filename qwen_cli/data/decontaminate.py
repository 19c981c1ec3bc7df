"""Decontamination: drop every training document that shares a long n-gram with a benchmark's test items.

A document is *contaminated* by a benchmark when one of its n-grams of words (default 13, the
length GPT-3 used, Brown et al. 2020, app. C) also occurs in one of that benchmark's test items.
Words are the runs of letters, digits and underscores of the lower-cased text (``\\w+``), so
whitespace, punctuation and formatting changes (re-indented code, LaTeX spacing, line breaks)
do not hide a copy, and the check needs no tokenizer. An item or document shorter than n words
is indexed whole, as an n-gram of its own length k, and documents are also scanned for
k-grams, so a short item is still caught when a document contains it. N-grams made only of
numbers are not indexed: ``1 2 3 … 13`` occurs in a HumanEval test and in ``heapq.py`` alike,
and such runs (counting, tables, matrices) say nothing about a copied item.

The index maps (length, Python ``hash`` of the word tuple; valid in this process only) to the
benchmarks the n-gram came from; a document is checked in one pass over its words per indexed
length. :class:`Decontaminator` keeps the counts that a run's manifest records.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping

WORD = re.compile(r"\w+")
DEFAULT_NGRAM = 13


def words(text: str) -> list[str]:
    """The lower-cased ``\\w+`` words of ``text``."""
    return WORD.findall(text.lower())


def ngram_hashes(seq: list[str], n: int, skip_numbers: bool = False) -> Iterator[int]:
    """Hashes of the n-grams of the word list ``seq`` (none when it is shorter than ``n``); with
    ``skip_numbers``, n-grams made only of numbers are left out."""
    for i in range(len(seq) - n + 1):
        gram = tuple(seq[i : i + n])
        if not (skip_numbers and all(word.isdigit() for word in gram)):
            yield hash(gram)


class Decontaminator:
    """An n-gram index of benchmark test items, and the counts of what it removed.

    ``benchmarks`` maps a benchmark name to the texts of its test items.
    """

    def __init__(self, benchmarks: Mapping[str, Iterable[str]], n: int = DEFAULT_NGRAM) -> None:
        if n < 1:
            raise ValueError(f"n-gram length must be >= 1, got {n}")
        self.n = n
        self.items: dict[str, int] = {}
        self.lengths: set[int] = set()  # n, and the word counts of items shorter than n
        shared: dict[tuple[int, int], set[str]] = {}
        for name, texts in benchmarks.items():
            count = 0
            for text in texts:
                count += 1
                seq = words(text)
                k = min(n, len(seq))
                if k:
                    self.lengths.add(k)
                    for h in ngram_hashes(seq, k, skip_numbers=True):
                        shared.setdefault((k, h), set()).add(name)
            self.items[name] = count
        self.index = {key: frozenset(names) for key, names in shared.items()}
        self.checked = 0
        self.removed: Counter[str] = Counter()  # per benchmark (a document may count for several)
        self.removed_documents = 0

    def matches(self, text: str) -> set[str]:
        """The benchmarks ``text`` shares an n-gram with (empty when clean)."""
        seq = words(text)
        found: set[str] = set()
        for k in self.lengths:
            for h in ngram_hashes(seq, k):
                names = self.index.get((k, h))
                if names:
                    found |= names
        return found

    def keep(self, text: str) -> bool:
        """Check one document, count it, and say whether it may be trained on."""
        self.checked += 1
        found = self.matches(text)
        if found:
            self.removed_documents += 1
            self.removed.update(found)
        return not found

    def filter(self, documents: Iterable[str]) -> Iterator[str]:
        """The clean documents of ``documents`` (counted as they pass)."""
        return (doc for doc in documents if self.keep(doc))

    def report(self) -> dict:
        """What the manifest records: the n-gram length, the items indexed per benchmark, the counts."""
        return {"ngram": self.n, "test_items": dict(self.items), "checked": self.checked,
                "removed": self.removed_documents, "removed_by_benchmark": dict(self.removed)}
