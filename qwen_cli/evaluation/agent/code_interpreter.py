"""The code-interpreter benchmark (report Tables 7-8; Qwen-Agent's benchmark, version 20231206).

Each task (``code_interpreter_data``) is one ReAct episode (``qwen_cli.agent.react``) with one
tool, ``code_interpreter``: Python in a persistent sandboxed session holding the task's upload
files. An easy visualisation task's pre-filled step runs first, whatever tool name it gives (as
Qwen-Agent does) and the model continues after its observation. The model may run code at most
``MAX_STEPS[category]`` times (Qwen-Agent's limits: 3 for math and visualisation, 1 for general);
each cell stops after ``CELL_LIMITS.wall_s`` seconds (an endless loop is cut there, the model sees
the error and the episode goes on). Scores per task, pure functions of the episode:

- executable: the model ran code at least once and every code block it ran finished without an
  error (exception, time limit, killed sandbox); the pre-filled step does not count;
- math correct: the gold number appears among the numbers of some error-free execution output
  (what the cell printed and its last value) *and* among those of the final reply (the report's rule). Numbers are compared by value after
  Qwen-Agent's normalisation: thousands commas and a leading ``+`` dropped, ``84.0`` equals ``84``;
- visualisation correct: the judge (``judge.Judge``) says yes for the question and the images
  the model's error-free cells produced; no image means not correct, no judge means not scored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from qwen_cli.agent.react import Episode, Step, parse_reply, run_episode
from qwen_cli.agent.tools import Observation, PythonTool
from qwen_cli.data.react import CODE_INTERPRETER_SPEC, OBSERVATION, observation_text
from qwen_cli.evaluation.agent.code_interpreter_data import CodeTask
from qwen_cli.evaluation.agent.judge import Judge
from qwen_cli.sandbox import Limits

MAX_STEPS = {"math": 3, "visualization": 3, "general": 1}
CELL_LIMITS = Limits(wall_s=10.0, session_s=180.0)
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d,]*\d)")
GROUPS = ("math", "vis_hard", "vis_easy", "general")

Completer = Callable[[list[dict], str], str]


class CodeInterpreterTool(PythonTool):
    """The ``python`` tool under the benchmark's tool name."""

    spec = CODE_INTERPRETER_SPEC


def numbers(text: str) -> list[float]:
    """Every number written in ``text``, normalised (``1,234.50`` -> 1234.5, ``+3`` -> 3)."""
    return [float(m.group().replace(",", "").replace("+", "")) for m in NUMBER.finditer(text)]


def mentions(text: str, gold: str) -> bool:
    """Whether ``text`` contains the number ``gold`` (by value, to 1e-6)."""
    values = numbers(gold)
    if not values:
        return False
    return any(math.isclose(value, values[-1], rel_tol=1e-9, abs_tol=1e-6) for value in numbers(text))


def final_reply(episode: Episode) -> str | None:
    """The model's final response: its ``Final Answer``, or its closing text when it ended without
    one; None when the episode was cut (step limit, unknown tool)."""
    if episode.stop_reason in ("final_answer", "no_action"):
        return episode.reply
    return None


def execution_output(observation: Observation) -> str:
    """What a cell printed and its last value (not the image paths the observation lists)."""
    cell = observation.cell
    return observation.text if cell is None else "\n".join((cell.stdout, cell.value or ""))


def score_episode(task: CodeTask, episode: Episode) -> dict:
    """Executable, math correct and the images to judge (see the module docstring)."""
    runs = [s.observation for s in episode.steps if s.observation is not None]
    clean = [o for o in runs if not o.error]
    reply = final_reply(episode)
    math_correct = None
    if task.answer is not None:
        math_correct = reply is not None and mentions(reply, task.answer) \
            and any(mentions(execution_output(o), task.answer) for o in clean)
    return {"executable": bool(runs) and len(clean) == len(runs), "code_runs": len(runs),
            "math_correct": math_correct, "images": [image for o in clean for image in o.images]}


def run_task(task: CodeTask, complete: Completer, judge: Judge | None, images_dir: Path) -> dict:
    """One task's episode, scores and (visualisation) verdict, as a JSON-ready record."""
    tool = CodeInterpreterTool(task.files, out_dir=images_dir, limits=CELL_LIMITS)
    names = ", ".join(path.name for path in task.files)
    question = f"[Upload file {names}] {task.question}" if names else task.question
    prefilled, prefix = None, ""
    try:
        if task.prefill:
            thought, action, action_input, _ = parse_reply(task.prefill)
            prefilled = Step(thought, action or tool.name, action_input, tool.call(action_input))
            prefix = task.prefill.rstrip() + "\n" + OBSERVATION + observation_text(prefilled.observation.text)
        episode = run_episode(lambda messages, more: complete(messages, prefix + more), question, [tool],
                              MAX_STEPS[task.category])
    finally:
        tool.close()
    scores = score_episode(task, episode)
    record = {"where": task.where, "category": task.category, "level": task.level, "question": question,
              "answer": task.answer, "prefilled_step": prefilled.to_json() if prefilled else None,
              "episode": {**episode.to_json(), "transcript": prefix + episode.transcript}, **scores,
              "vis_correct": None, "judge": None}
    if task.category == "visualization" and judge is not None:
        verdict = judge(task.question, [Path(p) for p in scores["images"]]) if scores["images"] else None
        record["judge"] = verdict.to_json() if verdict else {"correct": False, "output": "",
                                                             "error": "no image from an error-free cell"}
        record["vis_correct"] = bool(verdict and verdict.correct)
    return record


def _rate(records: list[dict], key: str) -> float | None:
    values = [float(r[key]) for r in records if r[key] is not None]
    return sum(values) / len(values) if values else None


def summarise(records: list[dict]) -> dict:
    """Per category and overall: executable rate (Table 7), correctness (Table 8), counts."""
    group = {g: [r for r in records if (f"vis_{r['level']}" if r["level"] else r["category"]) == g] for g in GROUPS}
    vis = group["vis_hard"] + group["vis_easy"]
    scores = {"executable_math": _rate(group["math"], "executable"), "executable_visualization": _rate(vis, "executable"),
              "executable_general": _rate(group["general"], "executable"), "executable_all": _rate(records, "executable"),
              "correct_math": _rate(group["math"], "math_correct"),
              "correct_vis_hard": _rate(group["vis_hard"], "vis_correct"),
              "correct_vis_easy": _rate(group["vis_easy"], "vis_correct"), "correct_vis_all": _rate(vis, "vis_correct")}
    scores.update({f"n_{g}": len(rows) for g, rows in group.items()})
    scores["n_math_with_answer"] = sum(r["answer"] is not None for r in group["math"])
    return scores


def run_code_interpreter(complete: Completer, tasks: list[CodeTask], judge: Judge | None, images_dir: Path,
                         advance: Callable[[], None] = lambda: None) -> tuple[dict, list[dict]]:
    """Every task in order; (scores, per-task records with ``doc_id``)."""
    records = []
    for index, task in enumerate(tasks):
        records.append({"doc_id": index, **run_task(task, complete, judge, images_dir / f"task-{index:03d}")})
        advance()
    return summarise(records), records
