"""`qwen tokenize prepare | train | encode | stats`: clean corpora, vocabularies, token shards, compression.

Multi-valued options take several values after one flag (``--input a.txt b.jsonl``) as well
as the flag repeated (``--input a.txt --input b.jsonl``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from qwen_cli import terminal
from qwen_cli.commands.options import greedy_command
from qwen_cli.corpus import describe_skipped
from qwen_cli.errors import UserError

ON_ERROR_HELP = "error: stop at the first bad input (exit 2); skip: skip it and report counts"
TEXT_UNIT_HELP = "for text files: one document per file, per blank-line paragraph, or per line"

# options shared by train, encode and stats
TextField = Annotated[str, typer.Option("--text-field", help="JSONL/parquet field holding the text")]
TextUnit = Annotated[str, typer.Option("--text-unit", help=TEXT_UNIT_HELP)]
OnError = Annotated[str, typer.Option("--on-error", help=ON_ERROR_HELP)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="replace an existing output directory")]


class RichProgress:
    """Adapter from the library's ``start(phase, total, unit)`` / ``advance(n)`` calls to a rich bar.

    The bar is shown only when ``console`` is a terminal: elsewhere (a pipe, a log file) it would
    print nothing but a stray blank line when it stops."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
                                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                                  disable=not console.is_terminal)
        self._task = None
        self._unit = "bytes"

    def __enter__(self) -> RichProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def start(self, phase: str, total: int | None, unit: str = "bytes") -> None:
        if self._task is not None:
            self._progress.update(self._task, visible=False)
        self._unit = unit
        self._task = self._progress.add_task(phase, total=total, count="")

    def advance(self, n: int) -> None:
        task = self._progress.tasks[-1]
        done, total = task.completed + n, task.total
        if self._unit == "bytes":
            count = f"{done / 1e6:,.1f}" + (f"/{total / 1e6:,.1f}" if total else "") + " MB"
        else:
            count = f"{done:,.0f}" + (f"/{total:,.0f}" if total else "") + f" {self._unit}"
        self._progress.update(self._task, advance=n, count=count)


def prepare(
    recipe: Path = typer.Argument(..., help="prepare recipe TOML (e.g. recipes/tiny/prepare.toml)"),
    out: Path = typer.Option(..., "--out", help="output folder: data/ (JSONL for tokenize encode), removed/, manifest.json"),
    overrides: list[str] = typer.Option([], "--set", help="override a recipe value: section.key=value (repeatable)"),
    workers: int | None = typer.Option(None, "--workers", min=1, help="tasks run at once (sets executor.workers)"),
    overwrite: Overwrite = False,
    as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON"),
) -> None:
    """Clean a raw corpus as in the report's §2.1 (extraction, language ID, dedup, filters, mixing) with datatrove."""
    try:
        from qwen_cli.prepare.config import load
        from qwen_cli.prepare.run import prepare as run_prepare
    except ImportError as exc:
        raise UserError(f"qwen tokenize prepare needs {exc.name or 'datatrove'}: pip install 'qwen-cli[prepare]'") from None

    extra = [f"executor.workers={workers}"] if workers is not None else []
    console = terminal.console(stderr=True)
    manifest = run_prepare(load(recipe, [*overrides, *extra]), out, overwrite=overwrite, terminal=console.is_terminal)
    if manifest is None:
        console.print("submitted the Slurm jobs; run the same command again when they finish to assemble "
                      f"{out}", markup=False, soft_wrap=True)
        return
    removed = {r["rule"]: sum(v["docs"] for v in r["removed"].values()) for r in manifest["rules"]}
    _report(manifest, as_json, f"wrote {out}: {manifest['output']['docs']:,} documents, "
            f"{manifest['output']['bytes'] / 1e6:,.2f} MB (from {manifest['input']['bytes'] / 1e6:,.2f} MB); removed "
            + ", ".join(f"{rule} {n:,}" for rule, n in removed.items() if n) + f"; manifest {out / 'manifest.json'}")


def train(
    corpus: list[str] = typer.Option(..., "--corpus", help="text/JSONL/parquet files or directories"),
    vocab_size: int = typer.Option(..., "--vocab-size", help="total vocabulary: BPE ranks + 208 specials"),
    out: Path = typer.Option(..., "--out", help="tokenizer directory to write"),
    base: str = typer.Option("none", "--base", help="none: learn from bytes; cl100k: extend cl100k_base"),
    text_field: TextField = "text",
    text_unit: TextUnit = "document",
    on_error: OnError = "error",
    overwrite: Overwrite = False,
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Learn a Qwen-style byte-level BPE vocabulary (digits split, Qwen specials) from a corpus."""
    from qwen_cli.tokenizer.bpe import train_tokenizer

    with RichProgress(terminal.console(stderr=True)) as progress:
        summary = train_tokenizer(corpus, vocab_size, out, base=base, text_field=text_field,
                                  text_unit=text_unit, on_error=on_error, overwrite=overwrite, progress=progress)
    short = " (the corpus has no more pairs seen twice)" if summary["vocab_size"] < vocab_size else ""
    _report(summary, as_json, f"wrote {out}: {summary['vocab_size']} tokens{short} "
            f"({summary['num_ranks']} ranks + {summary['num_specials']} specials, padded "
            f"{summary['padded_vocab_size']}) from {summary['documents']} documents, "
            f"{summary['bytes'] / 1e6:.1f} MB in {summary['seconds']:.1f} s")


def encode(
    inputs: list[str] = typer.Option(..., "--input", help="text/JSONL/parquet files, directories or hub names"),
    out: Path = typer.Option(..., "--out", help="shard directory to write"),
    tokenizer: str = typer.Option("qwen", "--tokenizer", help="qwen, cl100k or a tokenizer directory"),
    text_field: TextField = "text",
    val_fraction: float = typer.Option(0.01, "--val-fraction", help="fraction of documents held out"),
    seed: int = typer.Option(0, "--seed", min=0, help="document shuffle seed"),
    workers: int | None = typer.Option(None, "--workers", min=1,
                                       help="encoding processes, at most the cores (default: all cores, at most 8)"),
    shard_tokens: int = typer.Option(1 << 26, "--shard-tokens", help="maximum tokens per shard file"),
    text_unit: TextUnit = "document",
    on_error: OnError = "error",
    overwrite: Overwrite = False,
    as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON"),
) -> None:
    """Encode documents into shuffled uint32 shards with a validation split and a manifest."""
    from qwen_cli.data.encode import available_cores, encode_corpus

    console = terminal.console(stderr=True)
    if workers is not None and workers > available_cores():
        console.print(f"--workers {workers}: using {available_cores()}, the cores available", markup=False)
    with RichProgress(console) as progress:
        manifest = encode_corpus(inputs, tokenizer, out, text_field=text_field, val_fraction=val_fraction,
                                 seed=seed, workers=workers, shard_tokens=shard_tokens, on_error=on_error,
                                 text_unit=text_unit, overwrite=overwrite, progress=progress)
    splits = manifest["splits"]
    _report(manifest, as_json, f"wrote {out}: {manifest['tokens']:,} tokens from {manifest['documents']:,} "
            f"documents (train {splits['train']['tokens']:,} in {len(splits['train']['shards'])} shards, "
            f"val {splits['val']['tokens']:,})")


def stats(
    tokenizers: list[str] = typer.Option(["qwen", "cl100k"], "--tokenizer", help="names or tokenizer directories"),
    corpora: list[str] = typer.Option(..., "--corpus", help="files or directories, one row group each"),
    max_bytes: int = typer.Option(2_000_000, "--max-bytes", help="read at most this much text per corpus"),
    text_field: TextField = "text",
    on_error: OnError = "error",
    plot: Path | None = typer.Option(None, "--plot", help="save a bar chart (PNG) here"),
    as_json: bool = typer.Option(False, "--json", help="print the table as JSON"),
) -> None:
    """Compression of several tokenizers on several corpora (the report's Figure 3)."""
    from qwen_cli.tokenizer.stats import compression_table, plot_compression, render_table

    result = compression_table(tokenizers, corpora, max_bytes=max_bytes, text_field=text_field,
                               on_error=on_error)
    if plot is not None:
        plot_compression(result, plot)
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        render_table(result, terminal.console())
        if plot is not None:
            terminal.console(stderr=True).print(f"wrote {plot}", markup=False)


def _report(result: dict, as_json: bool, line: str) -> None:
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        skipped = result.get("skipped") or {}
        if skipped:
            line += "; skipped " + describe_skipped(skipped)
        terminal.console().print(line, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``qwen tokenize`` with its four subcommands to the app."""
    sub = typer.Typer(name="tokenize", help="Clean a corpus, train a vocabulary, encode corpora into shards, "
                      "compare compression.", no_args_is_help=True)
    sub.command("prepare")(prepare)
    sub.command("train", cls=greedy_command("--corpus"))(train)
    sub.command("encode", cls=greedy_command("--input"))(encode)
    sub.command("stats", cls=greedy_command("--tokenizer", "--corpus"))(stats)
    app.add_typer(sub)
