"""``qwen eval``: resolve data, build tasks, run lm-eval on our model, report, write the JSON.

Progress bars (per task: scoring, generating, running tests) and warnings (prompts cut to fit the
model's window) go to stderr, the bars only when it is a terminal; the table goes to stdout.

Exit status: 0 when every requested task ran; 1 when at least one was skipped because its data
could not be found (the others are still scored and written); 2 for bad input (unknown task,
unreadable checkpoint or data file, impossible shot count, an ``--out`` that cannot be written:
checked before the run) via ``UserError``.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from unittest import mock

from rich.console import Console
from rich.markup import escape

from qwen_cli import terminal
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_file, check_writable

OFFLINE_ENV = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def parse_tasks(text: str) -> list[str]:
    from qwen_cli.evaluation.agent.runner import AGENT_TASKS
    from qwen_cli.evaluation.harness.registry import SPLITS

    known = [*SPLITS, *AGENT_TASKS]
    tasks = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in known]
    if not tasks or unknown:
        raise UserError(f"--tasks: unknown task {', '.join(unknown) or '(none given)'} (known: {', '.join(known)})")
    return list(dict.fromkeys(tasks))


def _check_device(device: str) -> None:
    """Refuse a ``--device`` other than cpu, cuda or cuda:N, or a CUDA device this machine lacks."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise UserError(f"--device {device}: expected cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if parsed.type == "cuda" and (parsed.index or 0) >= count:
        raise UserError(f"--device {device}: this machine has {count} usable CUDA device(s)")


def run_eval(checkpoint: Path, tasks: str, num_fewshot: int | None = None, limit: int | None = None,
             batch_size: int = 8, data_dir: Path | None = None, out: Path | None = None, seed: int = 0,
             allow_hub: bool = False, workers: int | None = None, device: str = "cpu",
             max_gen_toks: int | None = None, console: Console | None = None, quantize: str = "none",
             data: Path | None = None, judge: str | None = None, chat: bool = False) -> int:
    """Evaluate ``checkpoint`` on ``tasks`` (comma list); returns the exit status (see module doc).
    ``data``/``judge``: the agent tasks' ``--data`` and ``--judge`` (``agent.runner``)."""
    console = console or terminal.console(stderr=True)
    names = parse_tasks(tasks)
    from qwen_cli.evaluation.agent.runner import check_options

    agent = check_options(names, data, judge)
    if num_fewshot is not None and num_fewshot < 0:
        raise UserError("--num-fewshot must be >= 0")
    if limit is not None and limit < 1:
        raise UserError("--limit must be >= 1")
    if batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if max_gen_toks is not None and max_gen_toks < 1:
        raise UserError("--max-gen-toks must be >= 1")
    _check_device(device)
    from qwen_cli.model.quantize import QUANTIZE_MODES, quantize_model

    if quantize not in QUANTIZE_MODES:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, got {quantize!r}")
    if data_dir is not None and not data_dir.is_dir():
        raise UserError(f"{data_dir}: --data-dir is not a directory")
    if out is not None:
        check_writable(out)  # before the run, not after it
    if not allow_hub:
        os.environ.update(OFFLINE_ENV)  # before datasets / lm_eval are imported
    logging.getLogger("lm_eval").setLevel(logging.ERROR)

    from qwen_cli.evaluation.harness.registry import DataUnavailable, resolve
    from qwen_cli.evaluation.harness.tasks import PAPER_SHOTS, task_config
    from qwen_cli.evaluation.progress import EvalProgress
    from qwen_cli.sandbox import isolation

    progress = EvalProgress(console)
    configs, skipped, sources, shots = [], {}, {}, {}
    for name in (n for n in names if n not in agent.tasks):
        try:
            benchmark = resolve(name, data_dir, allow_hub)
        except DataUnavailable as exc:
            skipped[name] = str(exc)
            console.print(f"[yellow]skip[/] {escape(str(exc))}", soft_wrap=True)
            continue
        shots[name] = PAPER_SHOTS[name] if num_fewshot is None else num_fewshot
        configs.append(task_config(benchmark, shots[name], workers=workers, progress=progress))
        sources[name] = benchmark.source

    from qwen_cli.checkpoint import load
    from qwen_cli.evaluation.harness.lm_model import MIN_GEN_TOKS, QwenLM
    from qwen_cli.evaluation.harness.report import build_record, checkpoint_hash, render_table

    model, tokenizer = load(checkpoint, device=device)
    model = quantize_model(model, quantize)
    lm = QwenLM(model=model, tokenizer=tokenizer, batch_size=batch_size, seed=seed, progress=progress, chat=chat)
    lm_results = None
    if configs:
        with progress:
            lm_results = _evaluate(lm, configs, limit, seed, max_gen_toks, chat)
    config = {"checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": checkpoint_hash(checkpoint),
              "tasks": names, "shots": shots, "limit": limit, "seed": seed, "batch_size": batch_size,
              "max_gen_toks": max_gen_toks, "window": lm.max_length, "min_gen_toks": MIN_GEN_TOKS,
              "device": device, "quantize": quantize, "chat": chat, "data_sources": sources, "sandbox": isolation()}
    record = build_record(config, lm_results, skipped, lm.prompts_cut)
    if agent.tasks:
        from qwen_cli.evaluation.agent.runner import render_agent_table, run_agent_tasks

        with progress:
            found = run_agent_tasks(agent, model, tokenizer, limit=limit, seed=seed, max_gen_toks=max_gen_toks,
                                    progress=progress, images_dir=out and out.with_name(out.stem + "-images"))
        for key in ("results", "samples", "skipped"):
            record[key].update(getattr(found, key))
        record["config"]["data_sources"].update(found.sources)
        skipped.update(found.skipped)
    lm_tasks = [n for n in names if n not in agent.tasks]
    if lm_tasks:
        render_table({**record, "config": {**record["config"], "tasks": lm_tasks}}, terminal.console())
    if agent.tasks:
        render_agent_table(record["results"], terminal.console())
    if out is not None:
        _write_json(out, record)
        console.print(f"wrote {out}")
    return 1 if skipped else 0


def _evaluate(lm, configs: list[dict], limit: int | None, seed: int, max_gen_toks: int | None, chat: bool) -> dict:
    import lm_eval
    import lm_eval.api.task
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=False)
    # lm-eval draws a tqdm bar per task while it builds requests, with no switch to turn it off; our own
    # bars (EvalProgress) already show the run, so its bars are silenced rather than mixed into the output
    quiet = functools.partial(lm_eval.api.task.tqdm, disable=True)
    with mock.patch.object(lm_eval.api.task, "tqdm", quiet):
        return lm_eval.simple_evaluate(model=lm, tasks=configs, limit=limit, task_manager=manager,
                                       log_samples=True, random_seed=seed, numpy_random_seed=seed,
                                       torch_random_seed=seed, fewshot_random_seed=seed, bootstrap_iters=0,
                                       gen_kwargs={"max_gen_toks": max_gen_toks} if max_gen_toks else None,
                                       confirm_run_unsafe_code=True, apply_chat_template=chat)


def _write_json(path: Path, record: dict) -> None:
    import json

    with atomic_file(path) as handle:
        json.dump(record, handle, indent=1, ensure_ascii=False, default=str)
        handle.write("\n")
