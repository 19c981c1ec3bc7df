"""`qwen rlhf gold`: greedy gold exact match of chat checkpoints on prompts with known answers, and the
earliest checkpoint that reaches a bar (where PPO and DPO should start: learned something, room above)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def gold(
    checkpoints: list[Path] = typer.Argument(..., help="chat model directories, scored in the order given"),
    prompts: Path = typer.Option(..., "--prompts", help='JSONL {"prompt", "answer"} a line (e.g. prompts.jsonl '
                                 "of `qwen rlhf pairs addition`)"),
    limit: int = typer.Option(200, "--limit", min=0, help="only the first N prompts (0: all)"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="tokens per greedy reply at most"),
    system: str = typer.Option("You are a helpful assistant.", "--system",
                               help="system prompt of the ChatML rows (as in the model's recipes; \"\" for none)"),
    first_at_least: float | None = typer.Option(
        None, "--first-at-least", min=0.0, max=1.0,
        help="stop at the first checkpoint whose gold exact match reaches this share and print only its path on "
             "stdout (the scores go to stderr); exit 1 when none does"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per checkpoint on stdout"),
) -> int:
    """Greedy gold exact match (GSM8K's rule: the reply's last number is the answer) of each checkpoint.

    One line per checkpoint. With --first-at-least X the checkpoints are scored in order until one
    reaches X, and that one's path is the only thing on stdout, for a script to start from it:
    pick the step of an SFT run that PPO or DPO should improve, on prompts that are not the test set.
    """
    from qwen_cli import terminal
    from qwen_cli.checkpoint import load_model
    from qwen_cli.data.chat_template import ChatTemplate
    from qwen_cli.data.preference import read_gold_questions
    from qwen_cli.errors import UserError
    from qwen_cli.evaluation.reward.preference import gold_accuracy
    from qwen_cli.tokenizer import load_tokenizer

    questions = read_gold_questions(prompts, limit)  # every line checked before any model is loaded
    for checkpoint in checkpoints:
        if not checkpoint.is_dir():
            raise UserError(f"{checkpoint}: not a checkpoint directory")
    console = terminal.console(stderr=first_at_least is not None)
    for checkpoint in checkpoints:
        model = load_model(checkpoint)
        if max_new_tokens >= model.config.max_position_embeddings:
            raise UserError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in {checkpoint}'s "
                            f"{model.config.max_position_embeddings}-token window")
        result = gold_accuracy(model, ChatTemplate(load_tokenizer(checkpoint), system), questions, max_new_tokens)
        line = {"checkpoint": str(checkpoint), **result}
        if as_json and first_at_least is None:
            print(json.dumps(line))
        else:
            console.print(f"{checkpoint}  gold {result['gold']:.1%} of {result['prompts']}", markup=False)
        if first_at_least is not None and result["gold"] >= first_at_least:
            print(checkpoint)
            return 0
    if first_at_least is not None:
        console.print(f"no checkpoint reaches gold {first_at_least:.1%} on {prompts}", markup=False)
        return 1
    return 0
