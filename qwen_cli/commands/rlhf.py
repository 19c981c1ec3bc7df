"""`qwen rlhf pairs | sample-pairs | reward | score | gold | ppo | dpo`: alignment after SFT (report §3.2) — comparison
data, reward model, PPO, DPO."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from qwen_cli import terminal
from qwen_cli.commands.options import greedy_command
from qwen_cli.commands.rlhf_gold import gold
from qwen_cli.commands.rlhf_pairs import pairs, sample_pairs

RECIPE = typer.Argument(..., help="recipe TOML (e.g. recipes/tiny/reward.toml)")
OVERRIDES = typer.Option([], "--set", help="override a recipe value: section.key=value (repeatable)")
RESUME = typer.Option(False, "--resume", help="continue from the newest valid checkpoint in --out")
OVERWRITE = typer.Option(False, "--overwrite", help="replace the run already in --out instead of refusing to start")
AS_JSON = typer.Option(False, "--json", help="print the final result as JSON on stdout")


def _out(out: Path | None, recipe: Path, name: str) -> Path:
    return out if out is not None else Path("runs") / recipe.resolve().parent.name / name


def reward(
    recipe: Path = RECIPE,
    overrides: list[str] = OVERRIDES,
    out: Path | None = typer.Option(None, "--out", help="run directory (default: runs/<recipe dir name>/reward); "
                                    "phases go to OUT/pmp and OUT/rm"),
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    as_json: bool = AS_JSON,
) -> int:
    """Train a reward model: preference-model pretraining (\\[pmp]) then fine-tuning (\\[rm]) on comparison pairs.

    Pairs: JSONL {"prompt": str | [messages], "chosen": str, "rejected": str}. The result is a
    transformers Qwen2ForSequenceClassification directory; the \\[data] test sets are scored for each
    phase side by side (report Table 4) and written to OUT/scores.json.
    """
    from rich.console import Console

    from qwen_cli.evaluation.reward.report import render, score_checkpoint
    from qwen_cli.fsutil import atomic_file
    from qwen_cli.recipe import load_recipe
    from qwen_cli.stages.reward import SECTIONS, train_phases

    parsed = load_recipe(recipe, overrides, sections=SECTIONS)
    run_dir = _out(out, recipe, "reward")
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    code, finals = train_phases(parsed, run_dir, resume, overwrite, console)
    if code:
        return code
    tests = [Path(p) for p in parsed.data.test]
    results = [score_checkpoint(final, tests, parsed.data.seq_len, parsed.data.default_system)
               for final in finals.values()] if tests else []
    if results:
        render(results, [phase.upper() for phase in finals], console)
        with atomic_file(run_dir / "scores.json") as handle:
            json.dump(results, handle, indent=2)
    if as_json:
        print(json.dumps({"run_dir": str(run_dir), "final": {k: str(v) for k, v in finals.items()},
                          "scores": results}, indent=2))
    return 0


def score(
    checkpoints: list[Path] = typer.Argument(..., help="reward model (or chat model) directories, compared side by side"),
    pairs: list[Path] = typer.Option(..., "--pairs", help="preference JSONL test sets: --pairs a.jsonl b.jsonl "
                                     "(or the flag repeated)"),
    seq_len: int = typer.Option(2048, "--seq-len", min=1, help="tokens per prompt + reply row"),
    as_json: bool = typer.Option(False, "--json", help="print the scores as JSON on stdout"),
) -> None:
    """Pairwise accuracy of each checkpoint on each test set, plus the mean margin (report Table 4's layout).

    A reward model is scored by its reward at the end token; a chat model by the log-probability it
    gives each reply (how often it prefers the chosen one), e.g. before and after DPO.
    """
    from qwen_cli.evaluation.reward.report import check_inputs, render, score_checkpoint

    check_inputs(checkpoints, pairs)
    results = [score_checkpoint(c, pairs, seq_len) for c in checkpoints]
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        render(results, [str(c) for c in checkpoints], terminal.console())


def ppo(
    recipe: Path = typer.Argument(..., help="recipe TOML (e.g. recipes/tiny/ppo.toml)"),
    overrides: list[str] = OVERRIDES,
    out: Path | None = typer.Option(None, "--out", help="run directory (default: runs/<recipe dir name>/ppo)"),
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    as_json: bool = AS_JSON,
) -> int:
    """PPO against a reward model (report §3.2.2): policy, value, reference and reward models.

    Prompts: JSONL {"prompt": ...}; with an "answer" key the rollouts are also scored by exact
    match (a gold measure the reward model cannot game). Writes metrics.jsonl, checkpoints, the
    final policy (a chat model directory) and curves.png.
    """
    from qwen_cli.recipe import load_recipe
    from qwen_cli.rl.ppo import PPORun
    from qwen_cli.rl.ppo_config import SECTIONS

    parsed = load_recipe(recipe, overrides, sections=SECTIONS)
    run_dir = _out(out, recipe, "ppo")
    code, record = PPORun(parsed, run_dir, resume=resume, overwrite=overwrite).run()
    if as_json and code == 0:
        print(json.dumps({"run_dir": str(run_dir), **record}, indent=2))
    return code


def dpo(
    recipe: Path = typer.Argument(..., help="recipe TOML (e.g. recipes/tiny/dpo.toml)"),
    overrides: list[str] = OVERRIDES,
    out: Path | None = typer.Option(None, "--out", help="run directory (default: runs/<recipe dir name>/dpo)"),
    resume: bool = RESUME,
    overwrite: bool = OVERWRITE,
    as_json: bool = AS_JSON,
) -> int:
    """Direct preference optimisation of a chat model on comparison pairs (dpo.beta in the recipe).

    The held-out \\[data] test sets are scored before and after (how often the model prefers the
    chosen reply); same trainer, checkpoints and resume as `qwen sft`.
    """
    from qwen_cli.commands.training import run_recipe
    from qwen_cli.stages.dpo import SECTIONS, DPOStage

    return run_recipe(DPOStage, SECTIONS, recipe, overrides, out, resume, overwrite, as_json)


def register(app: typer.Typer) -> None:
    """Add ``qwen rlhf`` with its subcommands to the app."""
    sub = typer.Typer(name="rlhf", help="Align a chat model: build comparison pairs (from data or the model's own samples), reward model (PMP + RM), PPO, DPO; score pairs and gold answers.",
                      no_args_is_help=True)
    sub.command("pairs")(pairs)
    sub.command("sample-pairs")(sample_pairs)
    sub.command("reward")(reward)
    sub.command("score", cls=greedy_command("--pairs"))(score)
    sub.command("gold")(gold)
    sub.command("ppo")(ppo)
    sub.command("dpo")(dpo)
    app.add_typer(sub)
