"""What `qwen extend-context` runs: write a checkpoint with the techniques on, and/or the perplexity sweep.

Every option is checked (lengths, windows, T and the new window within ``MAX_CONTEXT``, no empty
list) before the model is loaded or anything is written."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from qwen_cli import terminal
from qwen_cli.checkpoint.model_dir import copy_with_config, load, read_config
from qwen_cli.errors import UserError
from qwen_cli.evaluation.long_context.sweep import (
    MAX_CONTEXT,
    Method,
    check_context,
    default_schedules,
    option_list,
    parse_window_spec,
    plot_sweep,
    read_documents,
    run_sweep,
    sweep_methods,
    trained_length,
)
from qwen_cli.fsutil import atomic_file
from qwen_cli.interop.qwen2 import hf_limitations
from qwen_cli.model.config import ROPE_NTK
from qwen_cli.terminal import print_table


def parse_lengths(text: str | None, trained: int) -> list[int]:
    """``--lengths 256,512`` or, when not given, T, 2T, 4T, 8T, 16T (those up to ``MAX_CONTEXT``)."""
    if text is None:
        return [trained * 2**k for k in range(5) if trained * 2**k <= MAX_CONTEXT]
    try:
        lengths = [int(part) for part in option_list("--lengths", text)]
    except ValueError:
        raise UserError(f"--lengths {text!r}: expected a comma list of token counts") from None
    if any(length < 2 for length in lengths):
        raise UserError(f"--lengths {text!r}: every length must be at least 2")
    return sorted({check_context("--lengths", length, repr(text)) for length in lengths})


def sweep_rows(methods: str, windows: str | None, layers: int, trained: int) -> list[Method]:
    """The sweep's rows from ``--methods`` and ``--windows`` (default schedules when not given)."""
    schedules = default_schedules(layers) if windows is None else option_list("--windows", windows, ";")
    return sweep_methods(option_list("--methods", methods), schedules, layers, trained)


def write_extended(checkpoint: Path, out: Path, max_length: int | None, ntk: str, logn: bool,
                   layer_windows: list[int], trained: int, overwrite: bool, console: Console) -> None:
    """Copy ``checkpoint`` to ``out`` with the context-extension settings in its config."""
    config = read_config(checkpoint)
    extended = replace(config, rope_ntk=ntk, logn_attn=logn, train_length=trained, layer_windows=layer_windows,
                       max_position_embeddings=max_length or config.max_position_embeddings)
    copy_with_config(checkpoint, out, extended, overwrite)
    console.print(f"wrote {out}: rope_ntk={ntk}, logn_attn={logn}, layer_windows={extended.layer_windows or 'full'}, "
                  f"T={trained}, max_position_embeddings={extended.max_position_embeddings}", markup=False)
    for note in hf_limitations(extended):
        console.print(f"note: transformers' Qwen2 cannot express {note}; it runs this checkpoint without it",
                      markup=False)


def render(result: dict, console: Console) -> None:
    table = Table(title=f"perplexity by sequence length (trained at T = {result['trained_length']})")
    table.add_column("method")
    for length in result["lengths"]:
        table.add_column(str(length), justify="right")
    for name, row in result["perplexity"].items():
        table.add_row(name, *("-" if row[length] is None else f"{row[length]:.2f}" for length in result["lengths"]))
    print_table(console, table)


def sweep(checkpoint: Path, corpus: list[str], lengths_list: list[int], rows: list[Method], tokens: int,
          trained: int, console: Console) -> dict:
    model, tokenizer = load(checkpoint)
    documents = read_documents(corpus, tokenizer)
    with Progress(TextColumn("perplexity sweep"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("sweep", total=len(rows) * len(lengths_list))
        return run_sweep(model, documents, lengths_list, rows, trained, tokens, lambda: progress.advance(task))


def run(checkpoint: Path, out: Path | None, max_length: int | None, ntk: str, logn: bool, window: str,
        train_length: int | None, overwrite: bool, corpus: list[str], lengths: str | None, methods: str,
        windows: str | None, tokens: int, plot: Path | None, as_json: bool) -> None:
    """The command: at least one of ``out`` (write) and ``corpus`` (sweep); ``lengths``/``windows`` None
    for their defaults. Every option is checked before the model is loaded or anything is written."""
    if out is None and not corpus:
        raise UserError("nothing to do: give --out DST (write an extended checkpoint) and/or --corpus PATH (sweep)")
    if ntk not in ROPE_NTK:
        raise UserError(f"--ntk {ntk!r}: expected one of {', '.join(ROPE_NTK)}")
    if max_length is not None:
        check_context("--max-length", max_length)
    console = terminal.console(stderr=True)
    config = read_config(checkpoint)
    trained = check_context("--train-length" if train_length else f"{checkpoint}: training length",
                            train_length or trained_length(checkpoint, config))
    layer_windows = parse_window_spec(window, config.num_layers, trained)
    if corpus:
        rows = sweep_rows(methods, windows, config.num_layers, trained)
        lengths_list = parse_lengths(lengths, trained)
    if out is not None:
        write_extended(checkpoint, out, max_length, ntk, logn, layer_windows, trained, overwrite, console)
    if not corpus:
        return
    result = sweep(checkpoint, corpus, lengths_list, rows, tokens, trained, console)
    if plot is not None:
        with atomic_file(plot, "wb") as handle:
            plot_sweep(result, handle)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        render(result, terminal.console())
