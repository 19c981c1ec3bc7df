"""The run directory of a training loop: checkpoints, the final model, and the checks around them.

A single-process loop hands over full state dicts and a callable that writes the model files;
this module lays out ``OUT/checkpoints/step_N`` (model files + ``qwen_cli.checkpoint.train_state``),
keeps the newest ``keep_last``, makes ``OUT/final`` from the last step's checkpoint (hard links, no
second write), all atomically, and finds the newest checkpoint that verifies for ``--resume``.

A multi-process loop writes the *sharded* layout instead (:func:`start_sharded`): every rank hands
its own shards (FSDP2 DTensors) to ``qwen_cli.checkpoint.dcp``, which writes them into the hidden
``checkpoints/.step_N.tmp-dcp`` (in a background thread with ``checkpoint.async_save``); rank 0 adds
the trainer state, and :meth:`ShardedSave.wait` — on every rank, before the next save or at the end —
waits for the writes and then (rank 0) hashes the small files and renames the directory to
``step_N``; a loop calls it as soon as :meth:`ShardedSave.written`, so a finished checkpoint is
published at the next step, not only at the next save. As with the full layout, a ``step_N``
directory is only ever complete: a run killed while writing leaves the hidden directory, which the
next start removes. ``OUT/final`` is then
exported from the shards tensor by tensor (:func:`write_final_sharded`). Around a run it
refuses to start over another run (:func:`check_run_dir`), removes a replaced run
(:func:`remove_run`) and the leftovers of writes killed midway (:func:`remove_leftovers`), and
compares a resumed run's recipe with the one it was trained with (:func:`check_resumable`).
Only rank 0 calls the writers and removers; every rank reads and checks.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from qwen_cli.checkpoint import dcp
from qwen_cli.checkpoint import train_state as ts
from qwen_cli.checkpoint.files import read_checksums, write_checksums
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_dir, fsync_dir, fsync_tree, link_or_copy
from qwen_cli.recipe import read_toml, toml_value

FINAL = "final"
RECIPE_FILE = "recipe.toml"
METRICS_FILE = "metrics.jsonl"
RUN_FILES = (RECIPE_FILE, METRICS_FILE, ts.CHECKPOINTS, FINAL)  # a directory holding any of these holds a run


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


def write_final(run_dir: Path, checkpoint: Path) -> Path:
    """``OUT/final``: the model files of the last step's ``checkpoint`` (its trainer state left out), hard-linked
    where the file system allows (else copied) with the checksums already computed for them: the final
    model is written and hashed once."""
    final_dir = run_dir / FINAL
    sums = read_checksums(checkpoint)
    with atomic_dir(final_dir) as tmp:
        for name in sums:
            if name not in ts.STATE_FILES:
                link_or_copy(checkpoint / name, tmp / name)
        write_checksums(tmp, sums)
    return final_dir


class ShardedSave:
    """A sharded checkpoint being written into its hidden directory (see the module docstring)."""

    def __init__(self, run_dir: Path, step: int, tmp: Path, future: Future | None, keep_last: int, main: bool) -> None:
        self.run_dir, self.step, self.tmp, self.future, self.keep_last, self.main = run_dir, step, tmp, future, keep_last, main

    def written(self) -> bool:
        """Whether this rank's part is on disk; on rank 0, the whole checkpoint (DCP's last step, writing the
        index, runs there once every rank's shards are written)."""
        return self.future is None or self.future.done()

    def wait(self) -> Path:
        """Every rank: wait for this rank's shards (async); rank 0 then publishes ``step_N``. Returns its path."""
        target = ts.checkpoint_dir(self.run_dir, self.step)
        if self.future is not None:
            try:
                self.future.result()
            except Exception as exc:  # the background writer's failure, e.g. a full disk
                raise UserError(f"{target}: cannot write ({str(exc).strip().splitlines()[0]})") from None
        if self.main:
            write_checksums(self.tmp, covered=lambda name: not name.endswith(dcp.SHARD_SUFFIX))
            fsync_tree(self.tmp)
            if target.exists():  # a damaged checkpoint of this step, skipped by --resume
                shutil.rmtree(target)
            os.replace(self.tmp, target)
            fsync_dir(target.parent)
            ts.prune_checkpoints(self.run_dir, self.keep_last)
        return target


def start_sharded(run_dir: Path, state: ts.TrainState, tensors: dict, param_groups: list, recipe_text: str,
                  keep_last: int, main: bool, process_group=None, asynchronous: bool = False) -> ShardedSave:
    """Every rank: write its shards of ``tensors`` (``{"model": ..., "optim": {"state": ...}}``) for ``state.step``
    (in the background when ``asynchronous``); rank 0 also writes the trainer state and recipe. Collective."""
    tmp = run_dir / ts.CHECKPOINTS / f".step_{state.step:06d}.tmp-dcp"
    if main:
        tmp.mkdir(parents=True, exist_ok=True)  # the other ranks' writers create it too
        ts.write_train_state(tmp, state, {"state": {}, "param_groups": param_groups}, sharded=True)
        (tmp / RECIPE_FILE).write_text(recipe_text)
    try:
        future = dcp.save(tmp, tensors, process_group, asynchronous)
    except OSError as exc:
        raise UserError(f"{ts.checkpoint_dir(run_dir, state.step)}: cannot write ({exc.strerror or exc})") from None
    return ShardedSave(run_dir, state.step, tmp, future, keep_last, main)


def write_final_sharded(run_dir: Path, write_model: Callable[[Path], None]) -> Path:
    """``OUT/final`` (rank 0): ``write_model`` exports the model of the last sharded checkpoint into it."""
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


def is_finished(run_dir: Path, checkpoint: Path, total_steps: int) -> bool:
    """Whether ``checkpoint`` is the last step's and the final model was saved after it."""
    return checkpoint == ts.checkpoint_dir(run_dir, total_steps) and (run_dir / FINAL).is_dir()


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a run in a directory that holds one, unless resuming it or overwriting it."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other (continue the run, or replace it)")
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found and not (resume or overwrite):
        raise UserError(f"{run_dir}: already holds a run ({', '.join(found)}); pass --resume to continue it "
                        "or --overwrite to replace it")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_run(run_dir: Path) -> None:
    """Delete a run's files (recipe, metrics, checkpoints, final model); other files stay."""
    for name in RUN_FILES:
        _remove(run_dir / name)


def remove_leftovers(run_dir: Path) -> None:
    """Delete what writes killed midway left: ``fsutil``'s ``.NAME.tmp-*`` / ``.NAME.old-*`` and checkpoint temps."""
    for name in (RECIPE_FILE, METRICS_FILE, FINAL):
        for kind in ("tmp", "old"):
            for path in run_dir.glob(f".{name}.{kind}-*"):
                _remove(path)
    ts.prune_checkpoints(run_dir, 0)


def check_resumable(checkpoint: Path, recipe: dict[str, dict[str, Any]], may_change: tuple[str, ...]) -> None:
    """Refuse to resume with a recipe (``Recipe.to_dict()``) that differs from the ``recipe.toml`` saved in
    the checkpoint being resumed in a key not in ``may_change`` (entries ``section.key`` or ``section.*``)."""
    path = checkpoint / RECIPE_FILE
    for name, old, new in _differences(read_toml(path), recipe):
        if name not in may_change and f"{name.split('.')[0]}.*" not in may_change:
            raise UserError(f"{path}: cannot resume with {name} = {_show(new)}: the run was trained with "
                            f"{_show(old)} (only {', '.join(may_change)} may change; --overwrite starts over)")


def _differences(old: dict, new: dict) -> Iterator[tuple[str, Any, Any]]:
    """(``section.key``, old value, new value) of every differing key, the old recipe's order first."""
    for section in dict.fromkeys([*old, *new]):
        before, after = old.get(section, {}), new.get(section, {})
        for key in dict.fromkeys([*before, *after]):
            if before.get(key) != after.get(key):
                yield f"{section}.{key}", before.get(key), after.get(key)


def _show(value: Any) -> str:
    return "unset" if value is None else toml_value(value)
