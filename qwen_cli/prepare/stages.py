"""The recipe as a list of datatrove stages (each one executor run), and the folders they share.

    filter             read, extract HTML/WARC, language ID, quality rules, offensive words
                       -> filtered/ (+ exact-dedup signatures of the normalised text)
    exact_find         one task: which signatures repeat                    -> exact/dups/
    minhash_signature  filtered/ minus exact duplicates -> MinHash signatures -> minhash/sigs/
    minhash_buckets    one task per LSH band: candidate pairs                 -> minhash/buckets/
    minhash_cluster    one task: union-find over the pairs                    -> minhash/clusters/
    dedup              filtered/ minus exact and near duplicates (+ perplexity scores) -> deduped/
    final              perplexity threshold, up-sampling, per-language routing -> output/data/
    instruct           instruction data minus benchmark 13-gram overlaps     -> output/data/instruct/

Stages that read ``filtered/`` use the same task count as ``filter``, so task r reads the file that
task r wrote: datatrove's dedup filters address documents by (rank, position).
Removed documents go to ``output/removed/<step>/`` (the manifest's examples come from there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datatrove.pipeline.dedup import (
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.readers import JsonlReader, ParquetReader, WarcReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import TextNormConfig, simplify_text

from qwen_cli.prepare.config import builtin_word_lists
from qwen_cli.prepare.perplexity import PerplexityFilter, PerplexityScorer
from qwen_cli.prepare.steps import (
    Decontaminate,
    EnsureShard,
    LanguageID,
    QualityRules,
    Resiliparse,
    Upsample,
    WholeFileReader,
    WordListFilter,
)
from qwen_cli.recipe import Recipe

RANK_FILE = "${rank}.jsonl"
NORM = TextNormConfig(norm_numbers=False)  # lower case, no punctuation or accents, whitespace collapsed


@dataclass
class Stage:
    """One executor run: its name (also its log folder), steps and number of tasks."""

    name: str
    pipeline: list
    tasks: int


def normalised(doc) -> str:
    """The text exact deduplication compares."""
    return simplify_text(doc.text, NORM)


def _writer(folder: Path, filename: str = RANK_FILE) -> JsonlWriter:
    return JsonlWriter(str(folder), output_filename=filename, compression=None)


def _removed(work: Path, step: str) -> JsonlWriter:
    return _writer(work / "output" / "removed" / step)


def _reader(fmt: str, paths_file: Path, source: str, text_field: str):
    """A datatrove reader for one source's files of one format (paths listed in ``paths_file``)."""
    kwargs = dict(data_folder="/", paths_file=str(paths_file), default_metadata={"source": source})
    if fmt == "jsonl":
        return JsonlReader(text_key=text_field, **kwargs)
    if fmt == "parquet":
        return ParquetReader(text_key=text_field, **kwargs)
    if fmt == "warc":
        return WarcReader(**kwargs)
    return WholeFileReader(**kwargs)


def _quality_rules(q) -> list:
    rules = []
    if q.gopher:
        rules.append(GopherQualityFilter(min_doc_words=q.min_words, max_doc_words=q.max_words))
    if q.gopher_repetition:
        rules.append(GopherRepetitionFilter())
    if q.c4:
        rules.append(C4QualityFilter(filter_no_terminal_punct=False))
    if q.fineweb:
        rules.append(FineWebQualityFilter())
    return rules


def filter_stage(r: Recipe, work: Path, groups: list[tuple[str, str, Path, str]], tasks: int) -> Stage:
    """Stage 1. ``groups``: (source, format, paths file, text field) per source and format."""
    markup = [_reader(fmt, pf, src, tf) for src, fmt, pf, tf in groups if fmt in ("html", "warc")]
    plain = [_reader(fmt, pf, src, tf) for src, fmt, pf, tf in groups if fmt not in ("html", "warc")]
    steps: list = [*markup]
    if markup and r.extract.enabled:  # disabled: pages go on as their raw markup
        if r.extract.engine == "resiliparse":
            steps.append(Resiliparse(timeout=r.extract.timeout))
        else:
            steps.append(Trafilatura(favour_precision=r.extract.favour_precision, timeout=r.extract.timeout))
    steps += plain
    if r.language.enabled:
        steps.append(LanguageID(r.language.keep, r.language.min_score, _removed(work, "language")))
    rules = _quality_rules(r.quality) if r.quality.enabled else []
    if rules:
        prose = [s.name for s in r.input.sources if s.quality]
        steps.append(QualityRules(rules, r.quality.languages, prose, _removed(work, "quality")))
    if r.offensive.enabled:
        lists = [Path(p) for p in r.offensive.word_lists] or builtin_word_lists()
        steps.append(WordListFilter(lists, r.offensive.max_fraction, _removed(work, "offensive")))
    steps += [_writer(work / "filtered"), EnsureShard(str(work / "filtered"))]
    if r.exact_dedup.enabled:
        steps.append(ExactDedupSignature(str(work / "exact" / "sigs"), _exact_config()))
    return Stage("filter", steps, tasks)


def _exact_config() -> ExactDedupConfig:
    return ExactDedupConfig(content_getter=normalised, hash_config=HashConfig(precision=64))


def _minhash_config(r: Recipe) -> MinhashConfig:
    m = r.minhash
    return MinhashConfig(n_grams=m.ngram, num_buckets=m.bands, hashes_per_bucket=m.rows, seed=m.seed,
                         norm_config=NORM, hash_config=HashConfig(precision=64))


def build(r: Recipe, work: Path, groups: list[tuple[str, str, Path, str]], tasks: int,
          instruct_file: Path | None, benchmarks: dict[str, list[str]]) -> list[Stage]:
    """Every stage the recipe enables, in run order."""
    stages = [filter_stage(r, work, groups, tasks)]
    filtered = lambda: JsonlReader(str(work / "filtered"), compression=None)  # noqa: E731
    dedup_steps: list = [filtered()]
    if r.exact_dedup.enabled:
        stages.append(Stage("exact_find", [ExactFindDedups(str(work / "exact" / "sigs"), str(work / "exact" / "dups"),
                                                           config=_exact_config())], 1))
        dedup_steps.append(ExactDedupFilter(str(work / "exact" / "dups"), _exact_config(),
                                            exclusion_writer=_removed(work, "exact_dedup")))
    if r.minhash.enabled:
        config, mh = _minhash_config(r), work / "minhash"
        first = [filtered()]
        if r.exact_dedup.enabled:
            first.append(ExactDedupFilter(str(work / "exact" / "dups"), _exact_config()))
        stages += [
            Stage("minhash_signature", [*first, MinhashDedupSignature(str(mh / "sigs"), config=config)], tasks),
            Stage("minhash_buckets", [MinhashDedupBuckets(str(mh / "sigs"), str(mh / "buckets"), config=config)],
                  r.minhash.bands),
            Stage("minhash_cluster", [MinhashDedupCluster(str(mh / "buckets"), str(mh / "clusters"),
                                                          config=config)], 1),
        ]
        dedup_steps.append(MinhashDedupFilter(str(mh / "clusters"), exclusion_writer=_removed(work, "minhash_dedup")))
    p = r.perplexity
    if p.enabled:
        dedup_steps.append(PerplexityScorer(p.model, p.max_tokens, str(work / "scores")))
    stages.append(Stage("dedup", [*dedup_steps, _writer(work / "deduped"), EnsureShard(str(work / "deduped"))],
                        tasks))
    final: list = [JsonlReader(str(work / "deduped"), compression=None)]
    if p.enabled:
        final.append(PerplexityFilter(str(work / "scores"), p.keep_fraction, p.max_perplexity,
                                      _removed(work, "perplexity")))
    final.append(Upsample({s.name: s.upsample for s in r.input.sources}))
    routed = "${language}/" + RANK_FILE if r.language.enabled and r.language.route else RANK_FILE
    final.append(_writer(work / "output" / "data", routed))
    stages.append(Stage("final", final, tasks))
    if instruct_file is not None:
        stages.append(Stage("instruct", [
            JsonlReader("/", paths_file=str(instruct_file), adapter=instruction_text,
                        default_metadata={"source": "instruct"}),
            Decontaminate(benchmarks, r.instruct.ngram, _removed(work, "decontamination")),
            _writer(work / "output" / "data" / "instruct"),
        ], 1))
    return stages


def instruction_text(self, data: dict, path: str, id_in_file: int | str) -> dict:
    """A JSONL record as a pretraining document: ``text``, or ``messages`` as "role: content" lines."""
    if isinstance(data.get("messages"), list):
        text = "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in data["messages"]
                         if isinstance(m, dict))
    else:
        text = data.get("text") if isinstance(data.get("text"), str) else ""
    return {"text": text, "id": f"{path}/{id_in_file}", "metadata": {}}
