"""Corpus sources: turn user inputs (files, directories, Hugging Face dataset names) into documents.

A utility below both the tokenizer (``qwen tokenize train`` / ``stats`` read corpora) and ``data/``
(``qwen tokenize encode`` writes shards from them), so neither package imports the other for it.

Input kinds, chosen by file suffix (``.gz`` allowed for text and JSONL):

- text (``.txt``, ``.md``, ``.py``, … or any explicitly named file of unknown suffix): one
  document per file, or per blank-line paragraph / per line with ``text_unit``;
- JSONL (``.jsonl``, ``.ndjson``): one document per line, taken from ``text_field``;
- ``.parquet``, ``.arrow``, ``.json`` files and Hugging Face hub datasets (``hf:NAME`` or
  ``hf:NAME:CONFIG``, split ``train``, online only): read with the ``datasets`` library in
  streaming mode, column ``text_field``.

Directories are walked recursively (sorted; hidden entries and ``__pycache__`` skipped); files
with other suffixes inside a directory are ignored and counted. Text and JSONL are read here
line by line rather than through ``datasets`` so that a bad line can be named exactly.

Bad input (invalid UTF-8, an empty file, a malformed JSONL line, a missing or non-string text
field) raises ``UserError("file:line: …")`` with ``on_error="error"``, or is skipped and counted
in :class:`ReadStats` with ``on_error="skip"``. Empty documents are always dropped and counted.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from qwen_cli.errors import UserError

TEXT_SUFFIXES = frozenset(
    ".txt .text .md .rst .tex .py .pyi .c .h .cc .cpp .hpp .java .js .ts .go .rs .rb .sh .html .css "
    ".xml .yaml .yml .toml .ini .cfg .csv .tsv".split()
)
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
DATASETS_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json"}
TEXT_UNITS = ("document", "paragraph", "line")
ON_ERROR = ("error", "skip")
HUB_PREFIX = "hf:"
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
SKIP_REASONS = {  # ReadStats.skipped keys: (one, several)
    "empty_file": ("empty file", "empty files"),
    "empty_document": ("empty document", "empty documents"),
    "invalid_utf8": ("input with invalid UTF-8", "inputs with invalid UTF-8"),
    "malformed_json": ("malformed JSON line", "malformed JSON lines"),
    "missing_field": ("record without a string text field", "records without a string text field"),
}


@dataclass
class SourceStats:
    """What one user input contributed."""

    input: str
    kind: str
    files: int = 0
    documents: int = 0
    bytes: int = 0


@dataclass
class ReadStats:
    """Counters for a whole read: per-input contributions, skips by reason, ignored files."""

    sources: list[SourceStats] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    ignored_files: int = 0

    def as_dict(self) -> dict:
        return {"sources": [vars(s) for s in self.sources], "skipped": dict(self.skipped),
                "ignored_files": self.ignored_files}


def describe_skipped(skipped: Mapping[str, int]) -> str:
    """``2 empty files, 1 malformed JSON line`` for a ``skipped`` count by reason."""
    return ", ".join(f"{n} {SKIP_REASONS[reason][n != 1]}" for reason, n in skipped.items())


def _kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    last = suffixes[-1] if suffixes else ""
    if last == ".gz" and len(suffixes) == 2:
        last = suffixes[0]
        if last in DATASETS_BUILDERS:
            return "datasets"
    if last in JSONL_SUFFIXES:
        return "jsonl"
    if last in DATASETS_BUILDERS:
        return "datasets"
    return "text" if last in TEXT_SUFFIXES else "other"


def _walk(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).parts
        if any(p.startswith(".") or p == "__pycache__" for p in rel) or not path.is_file():
            continue
        yield path


def expand_inputs(inputs: list[str], stats: ReadStats) -> list[tuple[SourceStats, str, str]]:
    """(stats, kind, location) for every file behind the inputs, plus hub names as kind 'hub'.

    Files found by walking a directory get kind ``dir-text`` / ``dir-jsonl`` etc.: empty ones
    among them (``__init__.py``) are counted, not errors.
    """
    found: list[tuple[SourceStats, str, str]] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            src = SourceStats(raw, "directory")
            before = len(found)
            for file in _walk(path):
                kind = _kind(file)
                if kind == "other":
                    stats.ignored_files += 1
                else:
                    found.append((src, f"dir-{kind}", str(file)))
            if len(found) == before:
                raise UserError(f"{raw}: no text, JSONL or parquet files in this directory")
        elif path.is_file():
            kind = _kind(path)
            src = SourceStats(raw, "text" if kind == "other" else kind)
            found.append((src, src.kind, raw))
        elif raw.startswith(HUB_PREFIX) and len(raw) > len(HUB_PREFIX):
            src = SourceStats(raw, "hub")
            found.append((src, "hub", raw.removeprefix(HUB_PREFIX)))
        else:
            raise UserError(f"{raw}: no such file or directory (for a Hugging Face hub dataset write "
                            f"{HUB_PREFIX}NAME[:CONFIG])")
        stats.sources.append(src)
    return found


def input_bytes(inputs: list[str]) -> int | None:
    """Size on disk of the local inputs (for progress bars); None when a hub name is among them."""
    total = 0
    for path in map(Path, inputs):
        if path.is_dir():
            total += sum(p.stat().st_size for p in _walk(path))
        elif path.is_file():
            total += path.stat().st_size
        else:
            return None
    return total


def _open(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


class _Reader:
    """Document iterator over resolved inputs that applies the bad-input policy."""

    def __init__(self, text_field: str, on_error: str, text_unit: str, stats: ReadStats) -> None:
        if on_error not in ON_ERROR:
            raise UserError(f"--on-error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
        if text_unit not in TEXT_UNITS:
            raise UserError(f"--text-unit must be one of {', '.join(TEXT_UNITS)}, not {text_unit!r}")
        self.text_field, self.on_error, self.text_unit, self.stats = text_field, on_error, text_unit, stats

    def bad(self, where: str, problem: str, reason: str, in_dir: bool = False) -> None:
        if self.on_error == "error" and not (in_dir and reason == "empty_file"):
            raise UserError(f"{where}: {problem} (use --on-error skip to skip and count such input)")
        self.stats.skipped[reason] += 1

    def text(self, path: str, in_dir: bool) -> Iterator[str]:
        with _open(path) as fh:
            data = fh.read()
        if not data.strip():
            self.bad(path, "empty file", "empty_file", in_dir)
            return
        if self.text_unit == "line":
            for lineno, raw in enumerate(data.splitlines(), 1):
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.bad(f"{path}:{lineno}", "invalid UTF-8", "invalid_utf8")
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            lineno = data.count(b"\n", 0, exc.start) + 1
            self.bad(f"{path}:{lineno}", "invalid UTF-8", "invalid_utf8")
            return
        yield from (_PARAGRAPH_BREAK.split(text) if self.text_unit == "paragraph" else [text])

    def jsonl(self, path: str, in_dir: bool) -> Iterator[str]:
        seen_any = False
        with _open(path) as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                seen_any = True
                where = f"{path}:{lineno}"
                try:
                    record = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    self.bad(where, "invalid UTF-8", "invalid_utf8")
                    continue
                except ValueError:
                    self.bad(where, "malformed JSON line", "malformed_json")
                    continue
                value = record.get(self.text_field) if isinstance(record, dict) else None
                if value is None:
                    self.bad(where, f"no '{self.text_field}' field", "missing_field")
                elif not isinstance(value, str):
                    self.bad(where, f"field '{self.text_field}' is not a string", "missing_field")
                else:
                    yield value
        if not seen_any:
            self.bad(path, "empty file", "empty_file", in_dir)

    def datasets(self, location: str, hub: bool, in_dir: bool) -> Iterator[str]:
        import datasets

        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()
        try:
            if hub:
                name, _, config = location.partition(":")
                rows = datasets.load_dataset(name, config or None, split="train", streaming=True)
            else:
                builder = DATASETS_BUILDERS[Path(location.removesuffix(".gz")).suffix.lower()]
                rows = datasets.load_dataset(builder, data_files=location, split="train", streaming=True)
            seen_any = False
            for rowno, row in enumerate(rows, 1):
                seen_any = True
                value = row.get(self.text_field)
                if not isinstance(value, str):
                    problem = "no" if value is None else "non-string"
                    self.bad(f"{location}:row {rowno}", f"{problem} '{self.text_field}' field", "missing_field")
                    continue
                yield value
        except UserError:
            raise
        except Exception as exc:  # datasets/pyarrow raise many types for unreadable input
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            what = "cannot load the hub dataset" if hub else "cannot read"
            raise UserError(f"{location}: {what} ({detail[:200]})") from None
        if not seen_any:
            self.bad(location, "empty file" if not hub else "empty dataset", "empty_file", in_dir)


def iter_documents(inputs: list[str], stats: ReadStats, text_field: str = "text",
                   on_error: str = "error", text_unit: str = "document") -> Iterator[str]:
    """Yield the non-empty documents of ``inputs`` in input order, filling ``stats``."""
    reader = _Reader(text_field, on_error, text_unit, stats)
    for src, kind, location in expand_inputs(inputs, stats):
        src.files += kind != "hub"
        in_dir = kind.startswith("dir-")
        kind = kind.removeprefix("dir-")
        if kind == "text":
            docs = reader.text(location, in_dir)
        elif kind == "jsonl":
            docs = reader.jsonl(location, in_dir)
        else:
            docs = reader.datasets(location, kind == "hub", in_dir)
        try:
            for doc in docs:
                if not doc.strip():
                    stats.skipped["empty_document"] += 1
                    continue
                src.documents += 1
                src.bytes += len(doc.encode("utf-8", errors="surrogatepass"))
                yield doc
        except (OSError, EOFError, zlib.error) as exc:  # EOFError / zlib.error: a damaged .gz
            raise UserError(f"{location}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
