"""The recipe's input files, found and checked before any stage starts (bad input fails in one line).

Directories are walked recursively in sorted order (hidden entries and ``__pycache__`` skipped).
Format ``auto`` goes by suffix: ``.html``/``.htm`` HTML, ``.warc``/``.warc.gz`` WARC, ``.jsonl``
(``.gz``) JSONL, ``.parquet`` parquet, anything else one text document per file. With
``input.check_utf8`` each text, HTML and JSONL file is read once through ``qwen_cli.corpus`` (the
reader ``qwen tokenize encode`` uses), so invalid UTF-8, a malformed JSON line or a record without
its text field is reported as ``file:line: ...`` before the run. Empty files are skipped and counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from qwen_cli.corpus import ReadStats, iter_documents
from qwen_cli.errors import UserError
from qwen_cli.prepare.config import Source

SUFFIX_FORMATS = {".html": "html", ".htm": "html", ".warc": "warc", ".jsonl": "jsonl", ".parquet": "parquet"}


@dataclass
class InputFiles:
    """Files per (source, format), their total size, and how many empty files were skipped."""

    groups: dict[tuple[str, str], list[Path]] = field(default_factory=dict)
    text_fields: dict[str, str] = field(default_factory=dict)
    bytes: int = 0
    empty_files: int = 0

    @property
    def count(self) -> int:
        return sum(len(files) for files in self.groups.values())


def file_format(path: Path, declared: str) -> str:
    """``declared`` unless ``auto``; then by suffix (a trailing ``.gz`` is looked through)."""
    if declared != "auto":
        return declared
    suffixes = path.suffixes[-2:] if path.suffix == ".gz" else path.suffixes[-1:]
    return SUFFIX_FORMATS.get(suffixes[0].lower() if suffixes else "", "text")


def _walk(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"{path}: no such file or directory")
    return sorted(p for p in path.rglob("*") if p.is_file()
                  and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(path).parts))


def find_inputs(sources: list[Source], check_utf8: bool) -> InputFiles:
    """Every input file, grouped; ``UserError`` for a missing path, bad text, or an empty corpus."""
    found = InputFiles()
    for source in sources:
        found.text_fields[source.name] = source.text_field
        for raw in source.paths:
            for path in _walk(Path(raw)):
                size = path.stat().st_size
                if size == 0:
                    found.empty_files += 1
                    continue
                fmt = file_format(path, source.format)
                if check_utf8 and fmt in ("text", "html", "jsonl"):
                    _check_text(path, fmt, source.text_field)
                found.groups.setdefault((source.name, fmt), []).append(path.resolve())
                found.bytes += size
    if not found.count:
        names = ", ".join(s.name for s in sources)
        raise UserError(f"input: the corpus is empty (no non-empty files in sources {names})")
    return found


def _check_text(path: Path, fmt: str, text_field: str) -> None:
    """Read ``path`` once (corpus reader, errors raised as ``file:line: ...``)."""
    stats = ReadStats()
    if fmt == "jsonl" and path.suffix not in (".jsonl", ".gz", ".ndjson"):
        return  # a declared-JSONL file of another suffix: the corpus reader would take it as text
    for _ in iter_documents([str(path)], stats, text_field=text_field, on_error="error"):
        pass


def write_paths_files(found: InputFiles, folder: Path) -> list[tuple[str, str, Path, str]]:
    """One datatrove paths file per group (paths relative to ``/``); (source, format, file, text field)."""
    folder.mkdir(parents=True, exist_ok=True)
    groups = []
    for (source, fmt), files in found.groups.items():
        paths_file = folder / f"{source}.{fmt}.txt"
        paths_file.write_text("".join(str(f).lstrip("/") + "\n" for f in files))
        groups.append((source, fmt, paths_file, found.text_fields[source]))
    return groups


def format_counts(found: InputFiles) -> dict[str, int]:
    """Files per format (for the manifest)."""
    counts: Counter[str] = Counter()
    for (_, fmt), files in found.groups.items():
        counts[fmt] += len(files)
    return dict(counts)
