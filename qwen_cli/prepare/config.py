"""The sections of a ``qwen tokenize prepare`` recipe (report §2.1), read by ``qwen_cli.recipe``.

One TOML table per stage; every stage has ``enabled``. Values are type- and range-checked when the
recipe is read (a key out of range is one line naming the file and key, exit 2). See
``recipes/tiny/prepare.toml`` for a commented example and ``docs/prepare.md`` for each rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from qwen_cli.model.config import ABOVE_ZERO, NON_NEGATIVE, POSITIVE, ConfigError, Range
from qwen_cli.recipe import Recipe, load_recipe, ranged

UNIT = Range(0, 1)  # [0, 1]
FORMATS = ("auto", "text", "html", "jsonl", "warc", "parquet")


@dataclass
class Source:
    """One input source: files or directories, their format, and how many times to repeat its documents."""

    name: str = ""
    paths: list[str] = field(default_factory=list)
    format: Literal["auto", "text", "html", "jsonl", "warc", "parquet"] = "auto"
    text_field: str = "text"
    upsample: float = 1.0  # 2.0 = every document twice; 1.5 = every document once, half of them twice
    quality: bool = True  # apply [quality]'s prose rules (false for code, which they would remove)


@dataclass
class InputSection:
    """The raw sources; ``check_utf8`` reads text/HTML/JSONL inputs once before the run to name bad lines."""

    sources: list[Source] = field(default_factory=list)
    check_utf8: bool = True

    def check(self) -> None:
        if not self.sources:
            raise ConfigError("sources", "must list at least one source")
        names = [s.name for s in self.sources]
        for i, source in enumerate(self.sources):
            if not source.name or not source.paths:
                raise ConfigError("sources", f"entry {i + 1} needs a name and at least one path")
            if not 0 < source.upsample <= 100:
                raise ConfigError("sources", f"'{source.name}' upsample must be in (0, 100], got {source.upsample:g}")
        if len(set(names)) != len(names):
            raise ConfigError("sources", f"names must be unique, got {names}")


@dataclass
class ExecutorSection:
    """Where the stages run: ``local`` (a process pool), ``slurm`` or ``ray`` (change ``kind`` only)."""

    kind: Literal["local", "slurm", "ray"] = "local"
    workers: int = ranged(1, POSITIVE)  # local: processes at once; ray: CPUs; slurm: array tasks at once
    tasks: int = ranged(0, NON_NEGATIVE)  # shards of the input; 0 = one per input file
    slurm_partition: str = ""
    slurm_time: str = "24:00:00"
    slurm_mem_per_cpu_gb: float = ranged(2.0, ABOVE_ZERO)
    slurm_sbatch_args: dict = field(default_factory=dict)


@dataclass
class ExtractSection:
    """Main text out of HTML pages and WARC records, in datatrove's extractor sandbox (with a timeout)."""

    enabled: bool = True
    engine: Literal["resiliparse", "trafilatura"] = "resiliparse"
    favour_precision: bool = True  # trafilatura only
    timeout: float = ranged(1.0, ABOVE_ZERO)  # seconds per page


@dataclass
class LanguageSection:
    """Language ID (py3langid); ``keep`` = [] keeps every language; ``route`` writes data/<lang>/."""

    enabled: bool = True
    keep: list[str] = field(default_factory=list)
    min_score: float = ranged(0.5, UNIT)  # normalised probability of the top language
    route: bool = True


@dataclass
class ExactDedupSection:
    """Exact duplicates after normalisation (lower case, punctuation removed, whitespace collapsed)."""

    enabled: bool = True


@dataclass
class MinhashSection:
    """MinHash-LSH near-duplicates: word ``ngram`` shingles, ``bands`` x ``rows`` hashes.

    A pair with Jaccard similarity s shares a band with probability 1 - (1 - s^rows)^bands; the
    threshold where that is 1/2 is about (1/bands)^(1/rows): 0.72 for 14 x 8.
    """

    enabled: bool = True
    ngram: int = ranged(5, POSITIVE)
    bands: int = ranged(14, Range(1, 256))
    rows: int = ranged(8, Range(1, 64))
    seed: int = ranged(1, NON_NEGATIVE)


@dataclass
class QualitySection:
    """Rule-based filters (datatrove's Gopher, C4 and FineWeb rules) for documents in ``languages``."""

    enabled: bool = True
    languages: list[str] = field(default_factory=lambda: ["en"])  # the rules are English-tuned
    gopher: bool = True
    gopher_repetition: bool = True
    c4: bool = True
    fineweb: bool = False
    min_words: int = ranged(50, NON_NEGATIVE)
    max_words: int = ranged(100_000, POSITIVE)


@dataclass
class OffensiveSection:
    """Documents with more than ``max_fraction`` of their words in the word lists are removed."""

    enabled: bool = True
    word_lists: list[str] = field(default_factory=list)  # [] = the built-in qwen_cli/prepare/wordlists/*.txt
    max_fraction: float = ranged(0.0, UNIT)


@dataclass
class PerplexitySection:
    """Perplexity under a reference model (a ``qwen`` checkpoint directory): a cap and/or a keep-fraction."""

    enabled: bool = False
    model: str = ""
    max_perplexity: float = ranged(0.0, NON_NEGATIVE)  # 0 = no cap
    keep_fraction: float = ranged(1.0, Range(0, 1, low_open=True))  # the lowest-perplexity fraction
    max_tokens: int = ranged(512, POSITIVE)  # score the first tokens of each document

    def check(self) -> None:
        if self.enabled and not self.model:
            raise ConfigError("model", "must name a checkpoint directory when perplexity.enabled = true")


@dataclass
class InstructSection:
    """Instruction data mixed into the pretraining output, minus 13-gram overlaps with benchmarks."""

    enabled: bool = False
    paths: list[str] = field(default_factory=list)  # JSONL: {"messages": [...]} or {"text": ...}
    benchmarks: list[str] = field(default_factory=list)  # [] = every benchmark the registry knows
    data_dir: str = ""  # benchmark files (qwen eval --data-dir layout); "" = installed packages only
    ngram: int = ranged(13, POSITIVE)

    def check(self) -> None:
        if self.enabled and not self.paths:
            raise ConfigError("paths", "must list instruction files when instruct.enabled = true")


SECTIONS: dict[str, type] = {
    "input": InputSection, "executor": ExecutorSection, "extract": ExtractSection, "language": LanguageSection,
    "exact_dedup": ExactDedupSection, "minhash": MinhashSection, "quality": QualitySection,
    "offensive": OffensiveSection, "perplexity": PerplexitySection, "instruct": InstructSection,
}


def load(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """The prepare recipe at ``path`` with ``--set`` overrides, every key checked."""
    return load_recipe(path, overrides, sections=SECTIONS)


def builtin_word_lists() -> list[Path]:
    """The word lists shipped with the package (used when ``offensive.word_lists`` is empty)."""
    return sorted((Path(__file__).parent / "wordlists").glob("*.txt"))
