"""The agent tasks of ``qwen eval``: ``code-interpreter`` and ``tool-use`` (report §3.4, Tables 6-8).

They do not go through lm-eval: each item is a ReAct episode (``qwen_cli.agent``) on the chat
model, scored by ``code_interpreter`` / ``tool_use``. ``--data FILE`` replaces the packaged
offline set of the one agent task asked for; ``--judge CMD`` scores visualisation (without it
those columns are reported as skipped and ``qwen eval`` exits 1, as for any skipped task).
``--limit N`` keeps the first N items of each group (code interpreter: math, vis-hard, vis-easy,
general; tool use: positive, negative). Results land in the same JSON record as the lm-eval tasks:
scores under ``results``, one record per item (the whole episode: steps, observations, images,
verdicts, scores) under ``samples``; images the model drew are kept next to ``--out``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from qwen_cli.errors import UserError
from qwen_cli.evaluation.agent.judge import Judge
from qwen_cli.evaluation.progress import EvalProgress
from qwen_cli.terminal import print_table

AGENT_TASKS = ("code-interpreter", "tool-use")
REFERENCE_FILE = Path(__file__).with_name("reference_scores.json")
VIS_SKIPPED = "code-interpreter:visualization-correctness"
DEFAULT_GEN_TOKS = 512
COUNTS = {"executable_math": ("n_math",), "executable_visualization": ("n_vis_hard", "n_vis_easy"),
          "executable_general": ("n_general",), "executable_all": ("n_math", "n_vis_hard", "n_vis_easy", "n_general"),
          "correct_math": ("n_math_with_answer",), "correct_vis_hard": ("n_vis_hard",),
          "correct_vis_easy": ("n_vis_easy",), "correct_vis_all": ("n_vis_hard", "n_vis_easy"),
          "tool_selection_acc": ("n_positive",), "tool_input_rouge_l": ("n_positive",),
          "false_positive_rate": ("n_negative",)}


@dataclass
class AgentResults:
    """What the agent tasks add to ``qwen eval``'s record."""

    results: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AgentOptions:
    """The agent tasks asked for, their items (read and checked before the model loads), the judge."""

    tasks: tuple[str, ...]
    data: Path | None
    judge: Judge | None
    items: dict = field(default_factory=dict)


def check_options(tasks: list[str], data: Path | None, judge: str | None) -> AgentOptions:
    """Validate ``--data``/``--judge`` against the tasks before anything runs."""
    agent = tuple(t for t in tasks if t in AGENT_TASKS)
    if data is not None:
        if len(agent) != 1:
            raise UserError(f"--data {data}: give exactly one of {', '.join(AGENT_TASKS)} in --tasks "
                            "(--data replaces that task's items; use --data-dir for the other benchmarks)")
        if not data.is_file():
            raise UserError(f"--data {data}: no such file")
    if judge is not None and "code-interpreter" not in agent:
        raise UserError("--judge scores code-interpreter visualisation tasks: add code-interpreter to --tasks")
    from qwen_cli.evaluation.agent import code_interpreter_data, tool_use

    loaders = {"code-interpreter": code_interpreter_data.load_tasks, "tool-use": tool_use.load_items}
    return AgentOptions(agent, data, Judge(judge) if judge is not None else None,
                        {task: loaders[task](data) for task in agent})


def run_agent_tasks(options: AgentOptions, model, tokenizer, *, limit: int | None, seed: int,
                    max_gen_toks: int | None, progress: EvalProgress, images_dir: Path | None) -> AgentResults:
    """Run every agent task of ``options`` on the loaded chat model."""
    from qwen_cli.agent.react import model_completer
    from qwen_cli.evaluation.agent import code_interpreter, code_interpreter_data, tool_use

    found = AgentResults()
    calls = {"model_calls": 0, "calls_over_window": 0}
    complete = _counted(model_completer(model, tokenizer, max_gen_toks or DEFAULT_GEN_TOKS, seed=seed),
                        tokenizer, model.config.max_position_embeddings, calls)
    if "code-interpreter" in options.tasks:
        tasks = code_interpreter_data.limit_tasks(options.items["code-interpreter"], limit)
        found.sources["code-interpreter"] = str(options.data or code_interpreter_data.PACKAGED)
        with progress.bars({"code-interpreter": len(tasks)}, "episodes") as advance, \
                tempfile.TemporaryDirectory(prefix="qwen-eval-images-") as scratch:
            found.results["code-interpreter"], found.samples["code-interpreter"] = \
                code_interpreter.run_code_interpreter(complete, tasks, options.judge, images_dir or Path(scratch),
                                                      lambda: advance("code-interpreter"))
        _take_counts("code-interpreter", found, calls, progress)
        if options.judge is None and found.results["code-interpreter"]["n_vis_hard"] \
                + found.results["code-interpreter"]["n_vis_easy"]:
            found.skipped[VIS_SKIPPED] = "no --judge given: visualisation correctness needs an image judge"
            progress.warn(f"skip {VIS_SKIPPED}: no --judge given")
    if "tool-use" in options.tasks:
        items = tool_use.limit_items(options.items["tool-use"], limit)
        found.sources["tool-use"] = str(options.data or tool_use.PACKAGED)
        with progress.bars({"tool-use": len(items)}, "prompts") as advance:
            found.results["tool-use"], found.samples["tool-use"] = \
                tool_use.run_tool_use(complete, items, tokenizer.encode, lambda: advance("tool-use"))
        _take_counts("tool-use", found, calls, progress)
    return found


def _counted(complete, tokenizer, window: int, calls: dict):
    """``complete`` counting its calls and those whose prompt (ChatML turns + the transcript so far)
    does not fit the model's window: the model then sees only part of it, or nothing to continue."""
    from qwen_cli.data.chat_template import ChatTemplate

    template = ChatTemplate(tokenizer)

    def wrapped(messages: list[dict], prefix: str) -> str:
        calls["model_calls"] += 1
        calls["calls_over_window"] += len(template.prompt(messages)) + len(tokenizer.encode(prefix)) >= window
        return complete(messages, prefix)

    return wrapped


def _take_counts(task: str, found: AgentResults, calls: dict, progress: EvalProgress) -> None:
    """Move the call counts into ``task``'s scores (and warn when prompts did not fit)."""
    found.results[task].update(calls)
    if calls["calls_over_window"]:
        progress.warn(f"{task}: {calls['calls_over_window']} of {calls['model_calls']} model calls have a prompt "
                      "longer than the model's window")
    calls.update(model_calls=0, calls_over_window=0)


def render_agent_table(results: dict, console: Console) -> None:
    """Our agent scores (percent) beside Qwen-Chat's published ones."""
    reference = json.loads(REFERENCE_FILE.read_text())
    columns = reference["columns"]
    table = Table(title="qwen eval agent tasks (reference: Qwen-Chat, report Tables 6-8 and the 20231206 "
                        "benchmark page; see evaluation/agent/reference_scores.json)")
    for column in ("task", "metric", "n", "ours", *columns):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for task in AGENT_TASKS:
        if task not in results:
            continue
        scores = results[task]
        for i, (metric, row) in enumerate(reference["metrics"][task].items()):
            value, count = scores.get(metric), sum(scores.get(key, 0) for key in COUNTS[metric])
            ours = "-" if value is None else f"{100 * value:.1f}"
            if value is None and count and metric.startswith("correct_vis"):
                ours = "[yellow]skipped[/]"
            table.add_row(task if i == 0 else "", row["label"], str(count), ours,
                          *(f"{row[c]:.1f}" if c in row else "-" for c in columns))
    print_table(console, table)
