"""One datatrove executor per stage: local process pool, Slurm job arrays or Ray tasks (``[executor] kind``).

Each stage logs to ``logs/<stage>/`` (datatrove's ``completions/`` there is what makes a rerun skip
finished tasks). Local and Ray stages run one after another in this process; Slurm stages are
submitted at once as a chain of dependent jobs (``depends``), and the command is run again once they
have finished to assemble the output.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qwen_cli.prepare.config import ExecutorSection
from qwen_cli.prepare.stages import Stage


def make_executor(stage: Stage, logs: Path, e: ExecutorSection, depends=None):
    """The executor that runs ``stage`` as ``e`` asks (``depends``: the previous stage's, Slurm only)."""
    common = dict(pipeline=stage.pipeline, tasks=stage.tasks, logging_dir=str(logs / stage.name),
                  skip_completed=True)
    if e.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(**common, time=e.slurm_time, partition=e.slurm_partition, workers=e.workers,
                                     mem_per_cpu_gb=e.slurm_mem_per_cpu_gb, sbatch_args=dict(e.slurm_sbatch_args),
                                     job_name=f"qwen-prepare-{stage.name}", venv_path=str(Path(sys.prefix) / "bin/activate"),
                                     depends=depends)
    if e.kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        return RayPipelineExecutor(**common, workers=e.workers)
    from datatrove.executor import LocalPipelineExecutor

    return LocalPipelineExecutor(**common, workers=min(e.workers, stage.tasks))


def completed_tasks(logs: Path, stage: Stage) -> int:
    """How many of ``stage``'s tasks have finished (datatrove's completion markers)."""
    folder = logs / stage.name / "completions"
    return sum(1 for _ in folder.iterdir()) if folder.is_dir() else 0
