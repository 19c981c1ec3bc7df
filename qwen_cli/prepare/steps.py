"""The pipeline steps datatrove does not ship in an offline form: they plug into its executors as-is.

- :class:`WholeFileReader`: one document per text/HTML file (strict UTF-8);
- :class:`Resiliparse`: main-content extraction (datatrove ships only trafilatura's and readability's;
  resiliparse measured more accurate and ~19x faster on the Python docs, see docs/prepare.md);
- :class:`LanguageID`: py3langid labels (its model ships inside the package; datatrove's own
  language filter downloads fastText's), keep-list and minimum score;
- :class:`QualityRules`: datatrove's Gopher/C4/FineWeb filters as one step, applied only to the
  languages they were tuned for, with the firing rule as the removal reason;
- :class:`WordListFilter`: offensive-content filter from plain word-list files;
- :class:`Upsample`: repeat each source's documents ``upsample`` times (fractions by document hash);
- :class:`Decontaminate`: ``qwen_cli.data.decontaminate`` (13-gram overlap) as a filter;
- :class:`EnsureShard`: leaves an (empty) output file for a task that wrote nothing, so later
  stages that read the folder with the same task count see the same file for each rank.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.extractors.base import BaseExtractor
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.readers.base import BaseDiskReader

from qwen_cli.data.decontaminate import Decontaminator
from qwen_cli.errors import UserError

_WORD = re.compile(r"\w+")


class WholeFileReader(BaseDiskReader):
    """Each file is one document (its path is the id); invalid UTF-8 is a ``UserError`` naming the file."""

    name = "📄 whole files"

    def read_file(self, filepath: str) -> DocumentsPipeline:
        with self.data_folder.open(filepath, "rb") as handle:
            raw = handle.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{self.data_folder.resolve_paths(filepath)}: not UTF-8 "
                            f"(byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from None
        document = self.get_document_from_dict({"text": text, "id": filepath}, filepath, 0)
        if document:
            yield document


class Resiliparse(BaseExtractor):
    """Main-content text of an HTML page with resiliparse (run by datatrove's extractor sandbox, with its timeout)."""

    name = "⛏ resiliparse"

    def __init__(self, timeout: float = 1.0) -> None:
        super().__init__(timeout)

    def extract(self, text: str) -> str:
        from resiliparse.extract.html2text import extract_plain_text

        return extract_plain_text(text, main_content=True)


class LanguageID(BaseFilter):
    """Sets ``metadata["language"]`` and ``["language_score"]``; drops languages not in ``keep``."""

    name = "🌍 language ID (py3langid)"

    def __init__(self, keep: list[str], min_score: float, exclusion_writer=None) -> None:
        super().__init__(exclusion_writer)
        self.keep, self.min_score = frozenset(keep), min_score
        self._identifier = None

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self._identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            self._identifier = LanguageIdentifier.from_pickled_model(MODEL_FILE, norm_probs=True)
        language, score = self._identifier.classify(doc.text)
        doc.metadata["language"], doc.metadata["language_score"] = language, round(float(score), 4)
        if score < self.min_score:
            return False, "low_confidence"
        if self.keep and language not in self.keep:
            return False, "other_language"
        return True


class QualityRules(BaseFilter):
    """Several datatrove filters in a row, for documents of ``sources`` whose language is in ``languages``."""

    name = "🧹 quality rules"

    def __init__(self, rules: list[BaseFilter], languages: list[str], sources: list[str],
                 exclusion_writer=None) -> None:
        super().__init__(exclusion_writer)
        self.rules, self.languages, self.sources = rules, frozenset(languages), frozenset(sources)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get("source") not in self.sources:
            return True
        if self.languages and doc.metadata.get("language") not in self.languages:
            return True
        for rule in self.rules:
            result = rule.filter(doc)
            kept, reason = result if isinstance(result, tuple) else (result, None)
            if not kept:
                return False, reason or type(rule).__name__
        return True


def read_word_lists(paths: list[Path]) -> tuple[frozenset[str], tuple[str, ...]]:
    """(whole words, substrings) from word-list files: one entry per line, ``#`` comments.

    Entries made of ASCII letters match whole words (case-insensitive); others (CJK) match anywhere.
    """
    words, substrings = set(), set()
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: cannot read word list ({getattr(exc, 'strerror', None) or exc})") from None
        for line in lines:
            entry = line.split("#", 1)[0].strip().lower()
            if entry:
                (words if entry.isascii() and _WORD.fullmatch(entry) else substrings).add(entry)
    return frozenset(words), tuple(sorted(substrings))


class WordListFilter(BaseFilter):
    """Removes documents where more than ``max_fraction`` of the words are listed (any, at 0)."""

    name = "🚫 offensive words"

    def __init__(self, paths: list[Path], max_fraction: float, exclusion_writer=None) -> None:
        super().__init__(exclusion_writer)
        self.words, self.substrings = read_word_lists(paths)
        self.max_fraction = max_fraction

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text.lower()
        words = _WORD.findall(text)
        hits = sum(word in self.words for word in words) + sum(text.count(s) for s in self.substrings)
        if hits and hits / max(len(words), 1) > self.max_fraction:
            doc.metadata["offensive_hits"] = hits
            return False, "word_list"
        return True


class Upsample(PipelineStep):
    """Yields each document ``weights[source]`` times; a fractional part repeats that share of documents."""

    name = "🔁 up-sampling"

    def __init__(self, weights: Mapping[str, float]) -> None:
        super().__init__()
        self.weights = dict(weights)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            weight = self.weights.get(doc.metadata.get("source"), 1.0)
            share = zlib.crc32(doc.id.encode()) / 2**32  # the same documents get the extra copy every run
            copies = int(weight) + (share < weight - int(weight))
            self.stat_update("total")
            for k in range(copies):
                self.stat_update("forwarded")
                yield doc if k == 0 else Document(doc.text, f"{doc.id}#{k}", metadata=dict(doc.metadata))
            if copies == 0:
                self.stat_update("dropped")


class Decontaminate(BaseFilter):
    """Drops documents sharing an n-gram with a benchmark item (``benchmarks``: name -> item texts)."""

    name = "🧪 decontamination"

    def __init__(self, benchmarks: Mapping[str, list[str]], ngram: int, exclusion_writer=None) -> None:
        super().__init__(exclusion_writer)
        self.benchmarks, self.ngram = dict(benchmarks), ngram
        self._index = None

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self._index is None:
            self._index = Decontaminator(self.benchmarks, self.ngram)
        found = self._index.matches(doc.text)
        return (False, "overlap_" + "_".join(sorted(found))) if found else True


class EnsureShard(PipelineStep):
    """Pass-through that, once the data is exhausted, creates ``folder/<rank>.jsonl`` if missing."""

    name = "📁 ensure shard"

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        folder = get_datafolder(self.folder)
        if not folder.exists(f"{rank:05d}.jsonl"):
            with folder.open(f"{rank:05d}.jsonl", "w"):
                pass
