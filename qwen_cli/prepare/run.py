"""``qwen tokenize prepare``: check the inputs, run the stages (resumably), assemble the output folder.

Work happens in ``.<out>.prepare/`` next to ``out``; ``out`` itself appears only when every stage
has finished, by one rename (``data/``, ``removed/``, ``manifest.json``). A run that is killed leaves
the work folder: running the same command again skips the tasks datatrove marked complete and
produces the same output as an uninterrupted run. A work folder made with different settings is an
error unless ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from qwen_cli.errors import RunFailed, UserError
from qwen_cli.fsutil import atomic_dir
from qwen_cli.prepare.benchmarks import benchmark_texts
from qwen_cli.prepare.executors import completed_tasks, make_executor
from qwen_cli.prepare.inputs import find_inputs, format_counts, write_paths_files
from qwen_cli.prepare.manifest import build_manifest
from qwen_cli.prepare.stages import Stage, build
from qwen_cli.recipe import Recipe

SETTINGS = "settings.json"


def work_dir(out: Path) -> Path:
    """Where an unfinished run of ``out`` keeps its state."""
    return out.parent / f".{out.name}.prepare"


def check_files(r: Recipe) -> None:
    """Files the filters need must exist before anything runs."""
    p = r.perplexity
    if p.enabled and not (Path(p.model) / "config.json").is_file():
        raise UserError(f"perplexity.model: no checkpoint at {p.model} (a model directory with config.json)")
    for path in r.offensive.word_lists if r.offensive.enabled else []:
        if not Path(path).is_file():
            raise UserError(f"offensive.word_lists: no such file {path}")
    for path in r.instruct.paths if r.instruct.enabled else []:
        if not Path(path).is_file():
            raise UserError(f"instruct.paths: no such file {path}")


def _open_work(work: Path, settings: dict, overwrite: bool) -> bool:
    """Create or reuse the work folder; True when resuming."""
    saved = work / SETTINGS
    if saved.is_file():
        if json.loads(saved.read_text()) == settings and not overwrite:
            return True
        if not overwrite:
            raise UserError(f"{work}: an unfinished run with other settings (--overwrite starts over)")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    saved.write_text(json.dumps(settings, indent=1, sort_keys=True))
    return False


@contextlib.contextmanager
def _logs_to(path: Path):
    """Send file descriptor 2 (datatrove's console logging, also in its worker processes) to ``path``;
    yields a stream on the original stderr for the progress bar."""
    saved = os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    stream = os.fdopen(os.dup(saved), "w")
    os.dup2(log, 2)
    try:
        yield stream
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(log)
        stream.close()


def _run_stages(stages: list[Stage], work: Path, r: Recipe, terminal: bool) -> bool:
    """Run every stage; False when Slurm jobs were submitted (rerun to assemble)."""
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    with _logs_to(work / "datatrove.log") as stream:
        if r.executor.kind == "slurm":
            executor = None
            for stage in stages:
                executor = make_executor(stage, logs, r.executor, depends=executor)
            if all(completed_tasks(logs, s) >= s.tasks for s in stages):
                return True
            try:
                executor.run()  # submits every stage, each depending on the one before
            except Exception as exc:
                raise RunFailed(f"submitting the Slurm jobs failed: {type(exc).__name__}: {first_line(exc)} "
                                f"(log: {work / 'datatrove.log'})") from None
            return False
        console = Console(file=stream, force_terminal=terminal)
        total = sum(s.tasks for s in stages)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True, disable=not terminal) as bar:
            task = bar.add_task("prepare", total=total)
            for stage in stages:
                bar.update(task, description=f"prepare: {stage.name}")
                _run_one(make_executor(stage, logs, r.executor), stage, logs, bar, task, stages)
    return True


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a worker's re-raised error carries its remote traceback)."""
    return (str(exc).strip().splitlines() or [""])[0]


def _run_one(executor, stage: Stage, logs: Path, bar: Progress, task, stages: list[Stage]) -> None:
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.5):
            bar.update(task, completed=sum(completed_tasks(logs, s) for s in stages))

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        executor.run()
    except UserError:
        raise
    except Exception as exc:  # a datatrove task failed: its log has the traceback
        raise RunFailed(f"prepare stage {stage.name} failed: {type(exc).__name__}: {first_line(exc)} "
                        f"(log: {logs / stage.name / 'logs'})") from None
    finally:
        done.set()
        watcher.join()
    if completed_tasks(logs, stage) < stage.tasks:
        raise RunFailed(f"prepare stage {stage.name}: only {completed_tasks(logs, stage)} of {stage.tasks} "
                        f"tasks finished (log: {logs / stage.name / 'logs'})")
    bar.update(task, completed=sum(completed_tasks(logs, s) for s in stages))


def prepare(r: Recipe, out: Path, overwrite: bool = False, terminal: bool = False) -> dict | None:
    """Run the recipe into ``out``; the manifest, or None when Slurm jobs were submitted."""
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (--overwrite replaces it)")
    check_files(r)
    found = find_inputs(r.input.sources, r.input.check_utf8)
    benchmarks, bench_report = benchmark_texts(r.instruct) if r.instruct.enabled else ({}, {})
    tasks = r.executor.tasks or min(found.count, 4 * r.executor.workers)
    work = work_dir(out)
    settings = {"recipe": r.to_dict(), "tasks": tasks, "files": {f"{s}/{f}": [str(p) for p in files]
                                                                 for (s, f), files in found.groups.items()}}
    resumed = _open_work(work, settings, overwrite)
    groups = write_paths_files(found, work / "inputs")
    instruct_file = None
    if r.instruct.enabled:
        instruct_file = work / "inputs" / "instruct.txt"
        instruct_file.write_text("".join(str(Path(p).resolve()).lstrip("/") + "\n" for p in r.instruct.paths))
    stages = build(r, work, groups, tasks, instruct_file, benchmarks)
    start, done_before = time.perf_counter(), sum(completed_tasks(work / "logs", s) for s in stages)
    if not _run_stages(stages, work, r, terminal):
        return None
    manifest = build_manifest(work, stages, r)
    manifest.update(input={"files": format_counts(found), "bytes": found.bytes, "empty_files": found.empty_files},
                    tasks=tasks, resumed=resumed, tasks_done_before=done_before, seconds=round(time.perf_counter() - start, 2))
    if r.instruct.enabled:
        manifest["decontamination"] = bench_report
    (work / "output" / "data").mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        for part in ("data", "removed"):
            if (work / "output" / part).exists():
                shutil.move(work / "output" / part, tmp / part)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return manifest
