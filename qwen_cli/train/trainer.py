"""The one training loop every stage shares (pretrain, SFT, reward, DPO, specialise, ...).

The trainer knows nothing about the model: a :class:`~qwen_cli.train.stage.Stage` supplies the
model, its sharding unit, its FLOPs per token, how to count tokens, the batches and the loss
(the protocol is documented in :mod:`qwen_cli.train.stage`).

What the trainer does: AdamW groups and the warm-up + cosine schedule (``optim``), gradient
accumulation, clipping, autocast (``train.dtype``), seeds, periodic validation, rich progress +
``metrics.jsonl`` (``progress``), checkpoints with exact resume (``checkpointing``, on top of
``qwen_cli.checkpoint.train_state``, which also documents the run directory layout; under ``torchrun``
every rank writes its own DCP shards, in the background with ``checkpoint.async_save``), FSDP2 under
``torchrun`` (``distributed``) and signals (``run_control``): on SIGINT/SIGTERM the current step
finishes, a checkpoint is saved and the run stops with exit code 130 / 143 (128 + signal); a
second signal aborts at once (the previous checkpoint stays valid: saves are atomic).

The run directory (layout in ``qwen_cli.checkpoint.train_state``) is guarded by ``checkpointing``:

* A run starts only in a directory holding no run (``recipe.toml``, ``metrics.jsonl``,
  ``checkpoints/``, ``final/``) unless ``resume`` (continue it) or ``overwrite`` (its files are
  removed once the model is built); this is checked before the stage is built. Leftovers of writes
  killed midway (``.final.tmp-*``, ``checkpoints/.step_*`` ...) are removed at every start.
* ``resume`` restores the newest valid checkpoint after comparing the recipe with that
  checkpoint's ``recipe.toml``; only the keys in :data:`RESUMABLE` may differ, as they change neither the
  maths of a step nor the random numbers it draws. ``logging.*``, ``checkpoint.*``,
  ``train.val_every``, ``train.val_batches`` (validation runs in eval mode on fixed batches) and
  ``train.peak_flops`` keep the resumed run bit-exact; ``distributed.*``, ``train.compile``,
  ``train.device``, ``train.loss_chunk_tokens``, ``train.activation_checkpointing``, ``model.attention_backend`` and ``model.kernels`` trade speed and
  memory for rounding (the same sums in another order). Everything else must match: the model,
  data, optimizer, schedule, batch layout, seed, dtype, and ``train.steps`` / ``train.tokens`` too,
  because the warm-up and decay are laid out over the total step count, so a longer run would jump
  the learning rate at the resumed step.
* Resuming a run that already finished (its newest checkpoint is the last step's and ``final/``
  exists) changes nothing and returns exit code 0.
* A step whose loss or gradient norm is not finite stops the run with one line naming that step
  (``RunFailed``, exit code 1); no step from it on is logged or saved, so the newest checkpoint stays
  the last good one.
* The host waits for the device only where it needs numbers: each step's loss, token count, gradient
  norm and stage metrics stay on the device until the next logged step (``logging.log_every``), a
  validation, a checkpoint or a stop, where they are read at once, checked (the non-finite test above,
  for every step since the last read) and turned into the record (``tok_per_s`` / ``step_time`` /
  ``mfu`` over the steps since the last read). A diverged step is thus found at the next read.
* Every rank draws from its own random streams (rank 0 continues those seeded by ``train.seed``; rank
  ``r > 0`` is re-seeded with ``train.seed + r`` once the identically seeded model is built), and each
  checkpoint saves every rank's streams for that rank to get back on ``--resume``.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from qwen_cli.checkpoint import dcp
from qwen_cli.checkpoint import train_state as ts
from qwen_cli.data.shards import BatchLayout
from qwen_cli.errors import RunFailed, UserError
from qwen_cli.fsutil import atomic_file
from qwen_cli.recipe import Recipe
from qwen_cli.train import checkpointing as ckpt
from qwen_cli.train import distributed as dist
from qwen_cli.train.activation_checkpoint import apply_activation_checkpointing
from qwen_cli.train.mfu import Utilisation, measure_peak_flops
from qwen_cli.train.optim import build_optimizer, lr_at, set_lr
from qwen_cli.train.progress import MetricsWriter, RunProgress
from qwen_cli.train.run_control import StopSignals, seed_everything
from qwen_cli.train.stage import LossModule, Stage

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
RESUMABLE = ("logging.*", "checkpoint.*", "distributed.*", "train.val_every", "train.val_batches",
             "train.peak_flops", "train.compile", "train.device", "train.loss_chunk_tokens",
             "train.activation_checkpointing", "model.attention_backend", "model.kernels")  # recipe keys a resume may change (see the module docstring)


@dataclass
class StepSums:
    """One optimizer step's numbers, left on the device until they are read (see the module docstring)."""

    step: int
    lr: float
    sums: torch.Tensor  # float64 [loss sum, counted units, tokens, grad norm], summed over ranks
    extra: dict[str, torch.Tensor | float]  # the stage's metrics, averaged over micro batches


@dataclass
class TrainResult:
    run_dir: Path
    final_dir: Path | None
    step: int
    exit_code: int  # 0 finished, 128 + signal when stopped by SIGINT/SIGTERM
    metrics: dict


class Trainer:
    """Runs a :class:`Stage` for ``train.steps`` optimizer steps into ``run_dir``."""

    def __init__(self, stage: Stage, recipe: Recipe, run_dir: str | Path, resume: bool = False,
                 console: Console | None = None, overwrite: bool = False) -> None:
        self.stage, self.recipe, self.run_dir, self.resume = stage, recipe, Path(run_dir), resume
        self.overwrite = overwrite
        ckpt.check_run_dir(self.run_dir, resume, overwrite)
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.info = dist.init(recipe.train.device, recipe.distributed.backend)
        self.autocast_dtype = DTYPES[recipe.train.dtype]

    # ----- setup -------------------------------------------------------------------------
    def _layout(self) -> BatchLayout:
        t = self.recipe.train
        per_micro = t.micro_batch_size * self.stage.seq_len * self.info.world_size
        if t.batch_tokens % per_micro:
            raise UserError(f"train.batch_tokens = {t.batch_tokens} is not a multiple of micro_batch_size · seq_len "
                            f"· world_size = {t.micro_batch_size} · {self.stage.seq_len} · {self.info.world_size}")
        return BatchLayout(self.info.rank, self.info.world_size, t.micro_batch_size, t.batch_tokens // per_micro)

    def _total_steps(self) -> int:
        t = self.recipe.train
        steps = t.steps or t.tokens // t.batch_tokens
        if steps <= 0:
            raise UserError("train.steps (or train.tokens >= train.batch_tokens) must be set to a positive number")
        return steps

    def _build(self) -> None:
        seed_everything(self.recipe.train.seed)
        built = self.stage.build_model()
        self.model_config, self.resolved_recipe = built.config, built.recipe
        self.model = built.module.to(self.info.device)
        self.module = LossModule(self.model, self.stage.loss)
        blocks = apply_activation_checkpointing(self.module, self.stage.blocks(self.model),
                                                self.recipe.train.activation_checkpointing)
        dist.shard(self.module, blocks, self.info, self.recipe.distributed.reshard_after_forward,
                   DTYPES[self.recipe.train.dtype])
        if self.info.rank:  # the model is built alike everywhere; dropout & co. then differ per rank
            seed_everything(self.recipe.train.seed + self.info.rank)
        if self.recipe.train.compile:
            for block in blocks:
                block.compile()
        self.optimizer = build_optimizer(self.module, self.recipe.optim)
        self._save_group = dist.new_cpu_group(self.info) if self.recipe.checkpoint.async_save else None
        self._pending: ckpt.ShardedSave | None = None  # a sharded checkpoint still being written
        self.layout = self._layout()
        self.total_steps = self._total_steps()
        self.batches = self.stage.train_batches(self.layout)
        self.val = self.stage.val_batches(self.layout)
        if not self.val:
            self._print(f"[yellow]no validation:[/] the held-out split has less than one micro batch "
                        f"({self.layout.micro_batch_size} sequences) per process; add data or raise the "
                        "validation fraction")
        self.params = [p for p in self.module.parameters() if p.requires_grad]

    def _checkpoint_to_resume(self) -> Path | None:
        """The newest valid checkpoint (None: start at step 0) once the recipe is known to fit the run."""
        path = ckpt.newest_checkpoint(self.run_dir, lambda line: self._print(f"[yellow]skipping damaged checkpoint:[/] {line}"))
        if path is None:
            self._print(f"no checkpoint in {self.run_dir / ts.CHECKPOINTS}: starting from step 0")
            return None
        ckpt.check_resumable(path, self.resolved_recipe.to_dict(), RESUMABLE)
        return path

    def _prepare_run_dir(self) -> None:
        """Rank 0: remove the replaced run (``overwrite``) and the leftovers of writes killed midway."""
        if self.overwrite:
            ckpt.remove_run(self.run_dir)
        ckpt.remove_leftovers(self.run_dir)

    def _restore(self, path: Path) -> tuple[int, int]:
        """Load checkpoint ``path``; returns (step, tokens_seen)."""
        state, optim_state, payload = ts.read_train_state(path)
        if dcp.is_sharded(path):  # every rank reads the chunks it holds, whatever the world size that wrote them
            model, optim, _ = dist.sharded_state(self.module, self.optimizer)
            dcp.load(path, self._shards(model, optim))
            dist.load_sharded_state(self.module, self.optimizer, model, optim, optim_state["param_groups"])
        else:
            model_state = self.stage.read_model_state(path, self.model_config)  # may be lazy: read on lookup
            if self.info.enabled:
                dist.load_full_model_state(self.module, {f"model.{k}": v for k, v in model_state.items()})
            else:
                dist.copy_model_state(self.model, model_state, path)
            del model_state
            dist.load_full_optimizer_state(self.module, self.optimizer, optim_state)
        self.batches.load_state_dict(state.data)
        if not ts.restore_rng(path, payload, self.info.rank, self.info.device) and self.info.rank == len(payload["rng"]):
            self.console.print(f"{path} holds the random streams of {len(payload['rng'])} processes: rank "
                               f"{len(payload['rng'])} and above keep their freshly seeded ones", markup=False)
        self._print(f"resumed from {path} (step {state.step})")
        return state.step, state.tokens_seen

    # ----- helpers -----------------------------------------------------------------------
    def _print(self, message: str) -> None:
        if self.info.is_main:
            self.console.print(message)

    def _autocast(self):
        enabled = self.autocast_dtype != torch.float32
        return torch.autocast(self.info.device.type, dtype=self.autocast_dtype, enabled=enabled)

    def _to_device(self, batch: dict) -> dict:
        return {k: (v.to(self.info.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def _gathered_states(self) -> tuple[dict, dict]:
        """Full model state (our names) and optimizer state; collective under FSDP."""
        model_state = dist.full_model_state(self.module)
        model_state = {k.removeprefix("model."): v for k, v in model_state.items()}
        return model_state, dist.full_optimizer_state(self.module, self.optimizer)

    @staticmethod
    def _shards(model: dict, optim_state: dict) -> dict:
        """What a sharded checkpoint holds: the model under our parameter names, AdamW's tensors."""
        return {dcp.MODEL: {k.removeprefix("model."): v for k, v in model.items()}, dcp.OPTIM: {"state": optim_state}}

    def _wait_for_save(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.wait()

    def _save_sharded(self, step: int, tokens_seen: int, final: bool) -> Path | None:
        """Several processes: every rank writes its shards (in the background with ``checkpoint.async_save``,
        the previous save waited for first); rank 0 exports the final model from them, tensor by tensor."""
        self._wait_for_save()
        rng = dist.gather_to_main(ts.capture_rng(self.info.device), self.info)
        model, optim, groups = dist.sharded_state(self.module, self.optimizer)
        state = ts.TrainState(step, self.total_steps, tokens_seen, self.batches.state_dict(), rng)
        text, c = self.resolved_recipe.to_toml(), self.recipe.checkpoint
        self._pending = ckpt.start_sharded(self.run_dir, state, self._shards(model, optim), groups, text, c.keep_last,
                                           self.info.is_main, self._save_group, c.async_save)
        if not final:
            if not c.async_save:
                self._wait_for_save()
            return None
        path = ts.checkpoint_dir(self.run_dir, step)
        self._wait_for_save()
        if self.info.is_main:
            ckpt.write_final_sharded(self.run_dir, lambda directory: self.stage.write_model(
                directory, dcp.ShardedTensors(path), self.model_config, text))
        dist.barrier(self.info)
        return self.run_dir / ckpt.FINAL

    def _save(self, step: int, tokens_seen: int, final: bool) -> Path | None:
        """Checkpoint ``step`` (and the final model dir when ``final``): the sharded layout when several
        processes train, else the full one, written by this (rank 0) process."""
        if self.info.enabled:
            return self._save_sharded(step, tokens_seen, final)
        model_state, optim_state = self._gathered_states()
        rng = dist.gather_to_main(ts.capture_rng(self.info.device), self.info)
        final_dir = self.run_dir / ckpt.FINAL if final else None
        if self.info.is_main:
            text = self.resolved_recipe.to_toml()

            def write_model(directory: Path) -> None:
                self.stage.write_model(directory, model_state, self.model_config, text)

            state = ts.TrainState(step, self.total_steps, tokens_seen, self.batches.state_dict(), rng)
            path = ckpt.write_checkpoint(self.run_dir, state, optim_state, write_model, self.recipe.checkpoint.keep_last)
            if final:
                ckpt.write_final(self.run_dir, path)
        dist.barrier(self.info)
        return final_dir

    def _validate(self) -> dict[str, float]:
        if not self.val:
            return {}
        self.module.eval()
        totals = torch.zeros(2, dtype=torch.float64, device=self.info.device)
        with torch.no_grad(), self._autocast():
            for batch in self.val:
                loss, n, _ = self.module(self._to_device(batch))
                totals += torch.stack([loss.detach().double(), torch.as_tensor(n, device=self.info.device).double()])
        self.module.train()
        dist.all_reduce_sum(totals, self.info)
        val_loss = (totals[0] / totals[1].clamp(min=1)).item()
        return {"val_loss": val_loss, "val_ppl": float(np.exp(min(val_loss, 50.0)))}

    def _train_step(self, step: int) -> StepSums:
        """One optimizer step; nothing in it waits for the device (its numbers are read later, by ``_read``)."""
        lr = lr_at(step, self.recipe.optim.lr, self.total_steps, self.recipe.schedule)
        set_lr(self.optimizer, lr)
        sums = torch.zeros(4, dtype=torch.float64, device=self.info.device)  # loss, n, tokens, grad norm
        extra: dict[str, torch.Tensor | float] = {}
        for _ in range(self.layout.accum_steps):
            host_batch = next(self.batches)
            sums[2] += self.stage.count_tokens(host_batch)  # counted on the host copy: no device sync
            with self._autocast():
                loss, n, metrics = self.module(self._to_device(host_batch))
            loss.backward()
            sums[0] += loss.detach()
            sums[1] += n
            for key, value in metrics.items():
                value = value.detach().double().to(self.info.device) if torch.is_tensor(value) else value
                extra[key] = extra.get(key, 0.0) + value / self.layout.accum_steps
        dist.all_reduce_sum(sums, self.info)
        scale = (self.info.world_size / sums[1].clamp(min=1)).float()  # FSDP averages over ranks
        torch._foreach_mul_([p.grad for p in self.params if p.grad is not None], scale)
        clip = self.recipe.optim.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip, foreach=True)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        sums[3] = grad_norm
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepSums(step + 1, lr, sums, extra)

    def _read(self, pending: list[StepSums]) -> list[dict[str, float]]:
        """The steps' numbers on the host (one device sync); RunFailed at the first that diverged."""
        last = pending[-1].extra
        keys = [key for key, value in last.items() if torch.is_tensor(value)]
        flat = torch.cat([torch.stack([p.sums for p in pending]).flatten(),
                          torch.stack([last[key] for key in keys]) if keys else pending[0].sums[:0]])
        values = flat.tolist()
        read = []
        for i, p in enumerate(pending):
            loss_sum, n, tokens, grad_norm = values[4 * i : 4 * i + 4]
            metrics = {"loss": loss_sum / max(n, 1.0), "lr": p.lr, "grad_norm": grad_norm, "tokens": tokens}
            self._check_finite(p.step, metrics)
            read.append(metrics)
        read[-1].update({key: float(value) for key, value in last.items() if not torch.is_tensor(value)})
        read[-1].update(zip(keys, values[4 * len(pending):], strict=True))
        return read

    def _measure_peak(self) -> float:
        """Matmul peak without touching the RNG streams (a resumed run has just restored them)."""
        devices = [self.info.device] if self.info.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return measure_peak_flops(self.info.device, self.autocast_dtype)

    def _announce(self, peak: float) -> None:
        n_params = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.params)
        counted = f"{n_params / 1e6:.1f}M parameters" + (
            f" ({trainable / 1e6:.2f}M trainable)" if trainable != n_params else "")
        self._print(f"{self.stage.name}: {counted}, {self.total_steps} steps of "
                    f"{self.recipe.train.batch_tokens:,} tokens ({self.layout.accum_steps} micro steps × "
                    f"{self.layout.micro_batch_size} seq × {self.info.world_size} rank(s)), device {self.info.device}, "
                    f"{self.recipe.train.dtype}; peak {peak / 1e9:.0f} GFLOP/s per device")

    def _check_finite(self, step: int, metrics: dict[str, float]) -> None:
        """RunFailed when ``step`` diverged; its state is never saved, so the newest checkpoint stays good."""
        loss, grad_norm = metrics["loss"], metrics["grad_norm"]
        if math.isfinite(loss) and math.isfinite(grad_norm):
            return
        kept = ts.list_checkpoints(self.run_dir)
        raise RunFailed(f"training diverged at step {step} (loss {loss:.4g}, grad_norm {grad_norm:.4g}); stopped "
                        f"without saving it (newest checkpoint: {kept[-1][1] if kept else 'none'})")

    # ----- the loop ----------------------------------------------------------------------
    def run(self) -> TrainResult:
        self._build()
        checkpoint = self._checkpoint_to_resume() if self.resume else None
        if self.info.is_main:
            self._prepare_run_dir()
        if checkpoint is not None and ckpt.is_finished(self.run_dir, checkpoint, self.total_steps):
            final_dir = self.run_dir / ckpt.FINAL
            self._print(f"the run already finished at step {self.total_steps} ({final_dir}); nothing to do")
            return TrainResult(self.run_dir, final_dir, self.total_steps, 0, {})
        start_step, tokens_seen = self._restore(checkpoint) if checkpoint is not None else (0, 0)
        if self.info.is_main:
            with atomic_file(self.run_dir / ckpt.RECIPE_FILE) as handle:
                handle.write(self.resolved_recipe.to_toml())
        writer = MetricsWriter(self.run_dir / ckpt.METRICS_FILE, enabled=self.info.is_main,
                               resume_step=start_step if self.resume else None)
        try:
            return self._train(start_step, tokens_seen, writer)
        finally:
            writer.close()

    def _train(self, step: int, tokens_seen: int, writer: MetricsWriter) -> TrainResult:
        """Optimizer steps from ``step`` to the end (or a stop signal), then the final validation and save."""
        peak = self.recipe.train.peak_flops or self._measure_peak()
        mfu = Utilisation(self.stage.flops_per_token(self.model), peak, self.info.world_size, self._print)
        self._announce(peak)
        log_every, val_every = self.recipe.logging.log_every, self.recipe.train.val_every
        every, total = self.recipe.checkpoint.every, self.total_steps
        record: dict[str, Any] = {}
        pending: list[StepSums] = []  # steps not read from the device yet
        window = 0.0  # seconds spent on them
        exit_code = 0
        progress = RunProgress(total, self.stage.name, enabled=self.info.is_main,
                               mode=self.recipe.logging.progress, console=self.console, start=step)
        with StopSignals() as stop, progress:
            while step < total:
                began = time.perf_counter()
                pending.append(self._train_step(step))
                step += 1
                if self._pending is not None and self._pending.written():
                    self._wait_for_save()  # publish a finished asynchronous checkpoint now
                stopping = dist.broadcast_flag(stop.received is not None, self.info) and step < total
                validating = bool(val_every) and step % val_every == 0 and step < total
                saving = bool(every) and step % every == 0 and step < total
                logged = step % log_every == 0 or step == total or validating
                if not (logged or saving or stopping):
                    window += time.perf_counter() - began
                    progress.update(step, log=False)
                    continue
                read = self._read(pending)
                window += time.perf_counter() - began
                tokens = sum(r["tokens"] for r in read)
                tokens_seen += int(tokens)
                record = {"step": step, **read[-1], "tokens_seen": tokens_seen, "tok_per_s": tokens / window,
                          **mfu.fields(tokens / window), "step_time": window / len(read)}
                pending, window = [], 0.0
                if validating:
                    val = self._validate()
                    record.update(val)
                    if val:
                        progress.print(f"step {step}: val_loss {val['val_loss']:.4f}")
                if logged:
                    writer.write(record)
                progress.update(step, mfu.shown(record), log=logged)
                if stopping:
                    self._save(step, tokens_seen, final=False)
                    signum = stop.received or signal.SIGTERM
                    self._print(f"stopped by {signal.Signals(signum).name} after step {step}; "
                                f"checkpoint saved (continue with --resume)")
                    exit_code = 128 + int(signum)
                    break
                if saving:
                    self._save(step, tokens_seen, final=False)
        self._wait_for_save()  # a stop signal's asynchronous save is complete before the process ends
        final_dir = self._finish(step, tokens_seen, record, writer) if exit_code == 0 else None
        return TrainResult(self.run_dir, final_dir, step, exit_code, record)

    def _finish(self, step: int, tokens_seen: int, record: dict[str, Any], writer: MetricsWriter) -> Path:
        """Final validation and save. The validation line is logged after the save, so a run killed
        while saving and then resumed logs it once."""
        val = self._validate()
        record.update(val)
        if val:
            self._print(f"final val_loss {val['val_loss']:.4f} (ppl {val['val_ppl']:.1f})")
        final_dir = self._save(step, tokens_seen, final=True)
        if val:
            writer.write({"step": step, **val})
        self._print(f"saved {final_dir}")
        if self.info.is_main:
            self.stage.finish(final_dir, self.console)
        return final_dir

    def close(self) -> None:
        dist.shutdown(self.info)


def run_stage(stage_factory, recipe: Recipe, run_dir: str | Path, resume: bool = False,
              console: Console | None = None, overwrite: bool = False) -> TrainResult:
    """Build the stage, train it to the end (or a stop signal), and leave the process group.

    The run directory is checked before the stage is built (building may read all its data)."""
    ckpt.check_run_dir(Path(run_dir), resume, overwrite)
    stage = stage_factory(recipe)
    trainer = Trainer(stage, recipe, run_dir, resume=resume, console=console, overwrite=overwrite)
    try:
        return trainer.run()
    finally:
        trainer.close()
