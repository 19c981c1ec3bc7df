"""Writing and restoring training checkpoints under a run directory — shared by every training loop.

A loop hands over full state dicts (gathered by ``qwen_cli.train.distributed``) and a callable
that writes the model files; this module lays out ``OUT/checkpoints/step_N`` (model files +
``qwen_cli.checkpoint.train_state``), keeps the newest ``keep_last``, writes ``OUT/final``, all
atomically, and finds the newest checkpoint that verifies for ``--resume``. Only rank 0 calls the
writers; every rank reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qwen_cli.checkpoint import train_state as ts
from qwen_cli.checkpoint.files import write_checksums
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_dir

FINAL = "final"


def write_checkpoint(run_dir: Path, state: ts.TrainState, optim_state: dict, write_model: Callable[[Path], None],
                     keep_last: int) -> Path:
    """``OUT/checkpoints/step_N``: model files, trainer state and checksums; older ones pruned."""
    target = ts.checkpoint_dir(run_dir, state.step)
    with atomic_dir(target) as tmp:
        write_model(tmp)
        ts.write_train_state(tmp, state, optim_state)
        write_checksums(tmp)
    ts.prune_checkpoints(run_dir, keep_last)
    return target


def write_final(run_dir: Path, write_model: Callable[[Path], None]) -> Path:
    """``OUT/final``: the finished model directory (no trainer state)."""
    final_dir = run_dir / FINAL
    with atomic_dir(final_dir) as tmp:
        write_model(tmp)
        write_checksums(tmp)
    return final_dir


def newest_checkpoint(run_dir: Path, warn: Callable[[str], None]) -> Path | None:
    """The newest checkpoint that verifies (``warn`` is told about each damaged newer one); None when
    the run has none; UserError when there are checkpoints but none verifies."""
    path, skipped = ts.latest_valid_checkpoint(run_dir)
    for line in skipped:
        warn(line)
    if path is None and skipped:
        raise UserError(f"{run_dir}: no checkpoint could be verified for --resume")
    return path
