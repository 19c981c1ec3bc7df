"""`qwen eval`: score a checkpoint on the paper's benchmarks with lm-eval, offline."""

from __future__ import annotations

from pathlib import Path

import typer

from qwen_cli.evaluation.agent.runner import AGENT_TASKS
from qwen_cli.evaluation.harness.registry import SPLITS

TASKS_HELP = (f"Comma list of {', '.join(SPLITS)}; agent tasks: {', '.join(AGENT_TASKS)}. "
              "Where each task finds its data: docs/eval.md.")

def register(app: typer.Typer) -> None:
    """Add ``qwen eval`` to the app."""

    @app.command("eval")
    def eval_command(
        checkpoint: Path = typer.Argument(..., help="Checkpoint directory (ours or any HF Qwen2 directory)."),
        tasks: str = typer.Option("gsm8k,humaneval,mmlu", "--tasks", help=TASKS_HELP),
        num_fewshot: int | None = typer.Option(None, "--num-fewshot", help="Shots for every task (default: the paper's)."),
        limit: int | None = typer.Option(None, "--limit", help="Evaluate only the first N items per task."),
        batch_size: int = typer.Option(8, "--batch-size", help="Sequences per forward pass."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help="DIR/<task>/<split>.jsonl overrides packaged data."),
        out: Path | None = typer.Option(None, "--out", help="Write the full JSON record (config, scores, samples) here."),
        seed: int = typer.Option(0, "--seed", min=0, help="Seed for lm-eval and sampling."),
        hub: bool = typer.Option(False, "--hub", help="Allow downloading missing data from the Hugging Face hub."),
        workers: int | None = typer.Option(None, "--workers", min=1, help="Parallel sandboxes for code tasks (default: all cores)."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
        max_gen_toks: int | None = typer.Option(None, "--max-gen-toks", help="Cap generated tokens (quick runs)."),
        quantize: str = typer.Option("none", "--quantize", help="none | int8: weight-only int8 linear layers "
                                     "(in memory; the checkpoint is not changed)."),
        data: Path | None = typer.Option(None, "--data", help="JSONL replacing the packaged items of the one agent "
                                         "task asked for (Qwen-Agent's code-interpreter file, Qwen's ReAct plugin file)."),
        judge: str | None = typer.Option(None, "--judge", help="Command judging code-interpreter plots: run as "
                                         "CMD QUESTION IMAGE..., prints yes or no."),
        chat: bool = typer.Option(False, "--chat", help="Ask every task through the checkpoint's chat template "
                                  "(its own, else ChatML), as qwen specialize and qwen chat do."),
    ) -> int:
        """Score CKPT on lm-eval tasks; exit 1 if a task had to be skipped for lack of data."""
        from qwen_cli.evaluation.runner import run_eval

        return run_eval(checkpoint, tasks, num_fewshot, limit, batch_size, data_dir, out, seed, hub,
                        workers, device, max_gen_toks, quantize=quantize, data=data, judge=judge, chat=chat)
