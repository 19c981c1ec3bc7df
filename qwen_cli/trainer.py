"""The one training loop every stage shares (pretrain, SFT, reward, DPO, specialise, ...).

Stage protocol — subclass :class:`Stage` and provide:

* ``build_model() -> nn.Module`` — fresh (seeded by the trainer) or loaded from
  ``recipe.init.checkpoint``, on CPU in fp32. Set ``self.model_config`` (a ``ModelConfig``)
  so checkpoints can be written; ``self.tokenizer`` is saved into every checkpoint.
* ``seq_len`` — tokens per sequence; the trainer derives gradient accumulation from it:
  ``accum = train.batch_tokens / (train.micro_batch_size · seq_len · world_size)``.
* ``train_batches(layout) -> iterator`` of this rank's micro batches (dicts of tensors) with
  ``state_dict()`` / ``load_state_dict()`` giving the exact data position between optimizer
  steps (see ``qwen_cli.data.shards.ShuffledBatches``).
* ``val_batches(layout) -> list`` of this rank's held-out micro batches (may be empty).
* ``loss(model, batch) -> (loss_sum, n, metrics)`` — the loss *summed* over ``n`` counted
  units (tokens with label != -100 for language modelling; examples for sequence-level
  losses) and a dict of extra float metrics. The trainer divides by the global sum of ``n``
  over all micro batches and ranks, so every counted unit weighs the same whatever the
  accumulation or world size. ``model`` is whatever ``build_model`` returned, called inside
  the FSDP root's forward, so any method of it may be used.

Optional hooks: ``write_model(directory, state, recipe_text)`` (default: a Qwen2 model
directory via ``qwen_cli.checkpoint``), ``read_model_state(directory)`` (resume),
``finish(final_dir, console)`` (runs on rank 0 after the final save, e.g. print a sample).

What the trainer does: AdamW groups and the warm-up + cosine schedule (``qwen_cli.optim``),
gradient accumulation, clipping, autocast (``train.dtype``), seeds, periodic validation,
rich progress + ``metrics.jsonl`` (``qwen_cli.progress``), checkpoints with exact resume
(``qwen_cli.train_state``, which also documents the run directory layout), FSDP2 under
``torchrun`` (``qwen_cli.distributed``) and signals: on SIGINT/SIGTERM the current step
finishes, a checkpoint is saved and the run stops with exit code 130 / 143 (128 + signal);
a second signal aborts at once (the previous checkpoint stays valid: saves are atomic).
"""

from __future__ import annotations

import abc
import contextlib
import json
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from qwen_cli import distributed as dist
from qwen_cli import train_state as ts
from qwen_cli.checkpoint import write_checksums, write_model_files
from qwen_cli.data.shards import BatchLayout
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_dir, atomic_file
from qwen_cli.model import Block, ModelConfig, QwenModel
from qwen_cli.optim import build_optimizer, lr_at, set_lr
from qwen_cli.progress import MetricsWriter, RunProgress
from qwen_cli.recipe import Recipe, load_recipe

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class Stage(abc.ABC):
    """Base class of a training stage: where batches come from and what the loss is."""

    name = "stage"
    model_config: ModelConfig
    tokenizer: Any = None

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    @property
    @abc.abstractmethod
    def seq_len(self) -> int:
        """Tokens per training sequence."""

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """The model to train, on CPU in fp32 (sets ``self.model_config``)."""

    @abc.abstractmethod
    def train_batches(self, layout: BatchLayout):
        """This rank's micro batches: an iterator with ``state_dict`` / ``load_state_dict``."""

    @abc.abstractmethod
    def val_batches(self, layout: BatchLayout) -> list:
        """This rank's held-out micro batches (possibly empty)."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor | int, dict[str, float]]:
        """(loss summed over n counted units, n, extra float metrics)."""

    def write_model(self, directory: Path, state: dict[str, torch.Tensor], recipe_text: str) -> None:
        """Write a Qwen2-layout model directory from a full state dict."""
        with torch.device("meta"):
            model = QwenModel(self.model_config)
        model.load_state_dict(state, strict=True, assign=True)
        write_model_files(directory, model, self.tokenizer, recipe_text)

    def read_model_state(self, directory: Path) -> dict[str, torch.Tensor]:
        return ts.read_model_state(directory, self.model_config)

    def finish(self, final_dir: Path, console: Console) -> None:  # noqa: B027 (optional hook)
        """Runs on rank 0 after the final model is saved; does nothing unless overridden."""


class LossModule(nn.Module):
    """Root module for FSDP: its forward runs the stage's loss, so all parameters are gathered."""

    def __init__(self, model: nn.Module, loss_fn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: dict):
        return self.loss_fn(self.model, batch)


@dataclass
class TrainResult:
    run_dir: Path
    final_dir: Path | None
    step: int
    exit_code: int  # 0 finished, 128 + signal when stopped by SIGINT/SIGTERM
    metrics: dict


def measure_peak_flops(device: torch.device, dtype: torch.dtype, seconds: float = 0.3) -> float:
    """Matmul FLOP/s on ``device``: the best of three short trials in ``dtype`` and in fp32.

    A cheap stand-in for the hardware peak (robust to a briefly busy machine). fp32 counts too
    because CPUs without native bf16 emulate it several times slower than fp32.
    """
    n = 4096 if device.type == "cuda" else 1024
    best = 0.0
    for kind in dict.fromkeys((dtype, torch.float32)):
        a = torch.randn(n, n, device=device).to(kind)
        b = torch.randn(n, n, device=device).to(kind)
        torch.nn.functional.linear(a, b)  # warm-up
        for _ in range(3):
            reps, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds / 6 or reps == 0:
                torch.nn.functional.linear(a, b)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                reps += 1
            best = max(best, 2 * n**3 * reps / elapsed)
    return best


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _StopSignals:
    """First SIGINT/SIGTERM sets ``received``; a second one restores defaults and re-raises."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            self.restore()
            signal.raise_signal(signum)
            return
        self.received = signum

    def __enter__(self) -> _StopSignals:
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc) -> None:
        self.restore()


class Trainer:
    """Runs a :class:`Stage` for ``train.steps`` optimizer steps into ``run_dir``."""

    def __init__(self, stage: Stage, recipe: Recipe, run_dir: str | Path, resume: bool = False,
                 console: Console | None = None) -> None:
        self.stage, self.recipe, self.run_dir, self.resume = stage, recipe, Path(run_dir), resume
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
        self.model = self.stage.build_model().to(self.info.device)
        self.module = LossModule(self.model, self.stage.loss)
        dist.shard(self.module, Block, self.info, self.recipe.distributed.reshard_after_forward)
        if self.recipe.train.compile:
            for sub in self.model.modules():
                if isinstance(sub, Block):
                    sub.compile()
        self.optimizer = build_optimizer(self.module, self.recipe.optim)
        self.layout = self._layout()
        self.total_steps = self._total_steps()
        self.batches = self.stage.train_batches(self.layout)
        self.val = self.stage.val_batches(self.layout)
        if not self.val:
            self._print(f"[yellow]no validation:[/] the held-out split has less than one micro batch "
                        f"({self.layout.micro_batch_size} sequences) per process; add data or raise the "
                        "validation fraction")
        self.params = [p for p in self.module.parameters() if p.requires_grad]

    def _restore(self) -> tuple[int, int]:
        """Load the newest valid checkpoint; returns (step, tokens_seen) or (0, 0) when none."""
        path, skipped = ts.latest_valid_checkpoint(self.run_dir)
        for line in skipped:
            self._print(f"[yellow]skipping damaged checkpoint:[/] {line}")
        if path is None:
            if skipped:
                raise UserError(f"{self.run_dir}: no checkpoint could be verified for --resume")
            self._print(f"no checkpoint in {self.run_dir / ts.CHECKPOINTS}: starting from step 0")
            return 0, 0
        state, optim_state, payload = ts.read_train_state(path)
        model_state = {f"model.{k}": v for k, v in self.stage.read_model_state(path).items()}
        dist.load_full_model_state(self.module, model_state)
        dist.load_full_optimizer_state(self.module, self.optimizer, optim_state)
        self.batches.load_state_dict(state.data)
        ts.restore_rng(path, payload)
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

    def _save(self, step: int, tokens_seen: int, final: bool) -> Path | None:
        """Checkpoint ``step`` (and the final model dir when ``final``); rank 0 writes."""
        model_state, optim_state = self._gathered_states()
        target = ts.checkpoint_dir(self.run_dir, step)
        final_dir = self.run_dir / "final" if final else None
        if self.info.is_main:
            text = self.recipe.to_toml()
            state = ts.TrainState(step, self.total_steps, tokens_seen, self.batches.state_dict())
            with atomic_dir(target) as tmp:
                self.stage.write_model(tmp, model_state, text)
                ts.write_train_state(tmp, state, optim_state)
                write_checksums(tmp)
            ts.prune_checkpoints(self.run_dir, self.recipe.checkpoint.keep_last)
            if final_dir is not None:
                with atomic_dir(final_dir) as tmp:
                    self.stage.write_model(tmp, model_state, text)
                    write_checksums(tmp)
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

    def _train_step(self, step: int) -> dict[str, float]:
        lr = lr_at(step, self.recipe.optim.lr, self.total_steps, self.recipe.schedule)
        set_lr(self.optimizer, lr)
        totals = torch.zeros(3, dtype=torch.float64, device=self.info.device)  # loss, n, tokens
        extra: dict[str, float] = {}
        for _ in range(self.layout.accum_steps):
            batch = self._to_device(next(self.batches))
            with self._autocast():
                loss, n, metrics = self.module(batch)
            loss.backward()
            totals[0] += loss.detach().double()
            totals[1] += torch.as_tensor(n, device=self.info.device).double()
            totals[2] += batch["input_ids"].numel() if "input_ids" in batch else 0
            for key, value in metrics.items():
                extra[key] = extra.get(key, 0.0) + float(value) / self.layout.accum_steps
        dist.all_reduce_sum(totals, self.info)
        scale = self.info.world_size / max(totals[1].item(), 1.0)  # FSDP averages over ranks
        torch._foreach_mul_([p.grad for p in self.params if p.grad is not None], scale)
        clip = self.recipe.optim.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip, foreach=True)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": totals[0].item() / max(totals[1].item(), 1.0), "lr": lr,
                "grad_norm": grad_norm.item(), "tokens": totals[2].item(), **extra}

    def _measure_peak(self) -> float:
        """Matmul peak without touching the RNG streams (a resumed run has just restored them)."""
        devices = [self.info.device] if self.info.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return measure_peak_flops(self.info.device, self.autocast_dtype)

    # ----- the loop ----------------------------------------------------------------------
    def run(self) -> TrainResult:
        self._build()
        main = self.info.is_main
        start_step, tokens_seen = self._restore() if self.resume else (0, 0)
        if main:
            with atomic_file(self.run_dir / "recipe.toml") as handle:
                handle.write(self.recipe.to_toml())
            ts.prune_checkpoints(self.run_dir, 0)  # leftovers of a save killed midway
        writer = MetricsWriter(self.run_dir / "metrics.jsonl", enabled=main,
                               resume_step=start_step if self.resume else None)
        peak = self.recipe.train.peak_flops or self._measure_peak()
        flops_per_token = self.model.flops_per_token(self.stage.seq_len) if hasattr(self.model, "flops_per_token") else 0
        n_params = sum(p.numel() for p in self.model.parameters())
        self._print(f"{self.stage.name}: {n_params / 1e6:.1f}M parameters, {self.total_steps} steps of "
                    f"{self.recipe.train.batch_tokens:,} tokens ({self.layout.accum_steps} micro steps × "
                    f"{self.layout.micro_batch_size} seq × {self.info.world_size} rank(s)), device {self.info.device}, "
                    f"{self.recipe.train.dtype}; peak {peak / 1e9:.0f} GFLOP/s per device")
        log_every, val_every = self.recipe.logging.log_every, self.recipe.train.val_every
        every = self.recipe.checkpoint.every
        record: dict[str, Any] = {}
        step = start_step
        exit_code = 0
        progress = RunProgress(self.total_steps, self.stage.name, enabled=main, mode=self.recipe.logging.progress,
                               console=self.console, start=start_step)
        with _StopSignals() as stop, progress:
            while step < self.total_steps:
                began = time.perf_counter()
                metrics = self._train_step(step)
                elapsed = time.perf_counter() - began
                step += 1
                tokens_seen += int(metrics["tokens"])
                tok_s = metrics["tokens"] / elapsed
                record = {"step": step, **metrics, "tokens_seen": tokens_seen, "tok_per_s": tok_s,
                          "mfu": tok_s * flops_per_token / (peak * self.info.world_size), "step_time": elapsed}
                if val_every and step % val_every == 0 and step < self.total_steps:
                    val = self._validate()
                    record.update(val)
                    if val:
                        progress.print(f"step {step}: val_loss {val['val_loss']:.4f}")
                logged = step % log_every == 0 or step == self.total_steps or "val_loss" in record
                if logged:
                    writer.write(record)
                progress.update(step, record, log=logged)
                stopping = dist.broadcast_flag(stop.received is not None, self.info)
                if stopping and step < self.total_steps:
                    self._save(step, tokens_seen, final=False)
                    signum = stop.received or signal.SIGTERM
                    self._print(f"stopped by {signal.Signals(signum).name} after step {step}; "
                                f"checkpoint saved (continue with --resume)")
                    exit_code = 128 + int(signum)
                    break
                if every and step % every == 0 and step < self.total_steps:
                    self._save(step, tokens_seen, final=False)
        final_dir = None
        if exit_code == 0:
            val = self._validate()
            if val:
                record.update(val)
                writer.write({"step": step, **val})
                self._print(f"final val_loss {val['val_loss']:.4f} (ppl {val['val_ppl']:.1f})")
            final_dir = self._save(step, tokens_seen, final=True)
            self._print(f"saved {final_dir}")
            if main:
                self.stage.finish(final_dir, self.console)
        writer.close()
        return TrainResult(self.run_dir, final_dir, step, exit_code, record)

    def close(self) -> None:
        dist.shutdown(self.info)


def run_stage(stage_factory, recipe: Recipe, run_dir: str | Path, resume: bool = False,
              console: Console | None = None) -> TrainResult:
    """Build the stage, train it to the end (or a stop signal), and leave the process group."""
    stage = stage_factory(recipe)
    trainer = Trainer(stage, recipe, run_dir, resume=resume, console=console)
    try:
        return trainer.run()
    finally:
        trainer.close()


def run_recipe(stage_factory, sections: dict[str, type], recipe_path: Path, overrides: list[str],
               out: Path | None, resume: bool, as_json: bool) -> int:
    """What every training command does: load and check the recipe, train, report; returns the exit code.

    ``out`` defaults to ``runs/<recipe's directory name>/<stage name>``; with ``as_json`` the
    final metrics are printed as one JSON object on stdout.
    """
    recipe = load_recipe(recipe_path, overrides, sections=sections)
    run_dir = out if out is not None else Path("runs") / recipe_path.resolve().parent.name / stage_factory.name
    result = run_stage(stage_factory, recipe, run_dir, resume=resume)
    if as_json and result.exit_code == 0:
        print(json.dumps({"run_dir": str(result.run_dir), "final": str(result.final_dir), "step": result.step,
                          **result.metrics}, indent=2))
    return result.exit_code
