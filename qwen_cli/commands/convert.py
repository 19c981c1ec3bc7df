"""`qwen convert SRC DST`: import Qwen/Qwen2/Llama-family checkpoints and GGUF files, export ours for transformers/vLLM."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import typer

from qwen_cli import terminal
from qwen_cli.errors import UserError

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """``5GB``, ``500MB``, ``2GiB`` or a byte count -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise UserError(f"--shard-size {text!r}: expected a size like 5GB, 500MB, 2GiB or a byte count")
    size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if size <= 0:
        raise UserError(f"--shard-size {text!r}: must be positive")
    return size


def convert(
    src: Path = typer.Argument(..., help="checkpoint directory (or a llama.cpp .gguf file) to read"),
    dst: Path = typer.Argument(..., help="directory to write (created atomically)"),
    source: str = typer.Option("auto", "--from", help="auto | qwen1 | qwen2 | llama | gguf | native"),
    target: str = typer.Option("native", "--to", help="native: our checkpoint; hf: plus generation_config.json"),
    dtype: str = typer.Option("auto", "--dtype", help="auto (keep the source's) | fp32 | bf16 | fp16"),
    shard_size: str = typer.Option("5GiB", "--shard-size", help="split weights into shards above this size"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace DST if it exists"),
    allow_nonfinite: bool = typer.Option(False, "--allow-nonfinite", help="convert weights holding NaN or Inf "
                                         "(refused by default)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Convert a Qwen (v1), Qwen2-family, Llama/Mistral, GGUF or qwen_cli checkpoint into a qwen_cli / Hugging Face directory."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from qwen_cli.checkpoint.convert import convert as run

    shard_bytes = parse_size(shard_size)
    stderr = terminal.console(stderr=True)
    progress = Progress(TextColumn("converting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=stderr, transient=True, disable=as_json or not stderr.is_terminal)
    task = progress.add_task("tensors", total=None)

    def on_start(total: int) -> None:  # the input has been checked: show the bar from here on
        progress.update(task, total=total)
        progress.start()

    try:
        result = run(src, dst, source, target, dtype, shard_bytes, overwrite,
                     on_start=on_start, on_tensor=lambda name: progress.advance(task),
                     allow_nonfinite=allow_nonfinite)
    finally:
        if progress.live.is_started:
            progress.stop()
    if as_json:
        print(json.dumps(asdict(result)))
    else:
        terminal.console().print(f"{result.source_format} -> {result.target}: {result.num_tensors} tensors, "
                        f"{result.num_parameters:,} parameters ({result.dtype}) written to {result.dst}", markup=False)
        for item in result.not_expressible:
            stderr.print(f"note: transformers' Qwen2 cannot express {item}; it runs without it",
                                       markup=False)


def register(app: typer.Typer) -> None:
    """Add ``qwen convert`` to the app."""
    app.command("convert")(convert)
