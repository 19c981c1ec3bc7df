"""The stage protocol: what a training stage hands the model-agnostic :class:`~qwen_cli.train.trainer.Trainer`.

A stage is "where batches come from and what the loss is" plus the facts about its model the
loop needs. Subclass :class:`Stage` and provide:

* ``build_model() -> StageModel`` — the model on CPU in fp32 (fresh, seeded by the trainer, or
  loaded from ``recipe.init.checkpoint``), its resolved config (handed back to ``write_model``)
  and the recipe with every value the model resolved filled in (what ``recipe.toml`` records).
  Nothing is mutated: the recipe the stage was given stays as the user wrote it.
* ``seq_len`` — tokens per sequence; gradient accumulation is
  ``train.batch_tokens / (train.micro_batch_size · seq_len · world_size)``.
* ``blocks(model)`` — the repeated units FSDP shards one by one and ``train.compile`` compiles.
* ``flops_per_token(model)`` — training FLOPs per token, for MFU (0 when unknown).
* ``count_tokens(batch)`` — tokens a micro batch contributes to throughput and ``tokens_seen`` (an int or a
  tensor); it is given the batch as ``train_batches`` yielded it (on the host, before the copy to the device).
* ``train_batches(layout)`` — this rank's micro batches, an iterator with ``state_dict()`` /
  ``load_state_dict()`` giving the exact data position between optimizer steps (see
  ``qwen_cli.data.shards.ResumableBatches``); ``val_batches(layout)`` — held-out ones (may be empty).
* ``loss(model, batch) -> (loss_sum, n, metrics)`` — the loss *summed* over ``n`` counted units
  (tokens with label != -100 for language modelling, pairs for a reward model …) and extra scalar
  metrics: 0-dim tensors (preferred: they are averaged over the micro batches on the device and read
  only at logged steps, so the step never waits for the device) or floats (a ``float(tensor)`` in the
  loss is a device sync every micro batch). ``n`` may be an int or a tensor. The trainer divides
  by the global sum of ``n`` over micro batches and ranks, so every
  counted unit weighs the same whatever the accumulation or world size. ``model`` is what
  ``build_model`` returned, called inside the FSDP root's forward, so any of its methods may be used.
* ``write_model(directory, state, config, recipe_text)`` / ``read_model_state(directory, config)``
  — the model's part of a checkpoint (a full state dict, our parameter names). Either may be a lazy
  ``Mapping`` that reads each tensor when it is looked up: a multi-process run exports its final model
  from the DCP shards so, and a resume copies the model's tensors in one at a time.
* ``finish(final_dir, console)`` (optional) — runs on rank 0 after the final save.

``qwen_cli.stages.lm.LanguageModelStage`` implements everything but the data for Qwen decoders.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from qwen_cli.data.shards import BatchLayout
from qwen_cli.recipe import Recipe


@dataclass
class StageModel:
    """What ``Stage.build_model`` returns."""

    module: nn.Module  # the model to train, on CPU in fp32
    config: Any  # its resolved config, passed back to write_model / read_model_state
    recipe: Recipe  # the run's recipe with every value the model resolved filled in


class Stage(abc.ABC):
    """Base class of a training stage (see the module docstring)."""

    name = "stage"

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    @property
    @abc.abstractmethod
    def seq_len(self) -> int:
        """Tokens per training sequence."""

    @abc.abstractmethod
    def build_model(self) -> StageModel:
        """The model to train with its resolved config and recipe."""

    @abc.abstractmethod
    def blocks(self, model: nn.Module) -> list[nn.Module]:
        """The repeated submodules that are sharded (FSDP2) and compiled one by one."""

    @abc.abstractmethod
    def flops_per_token(self, model: nn.Module) -> float:
        """Training FLOPs per token (forward + backward), for MFU; 0 when unknown."""

    @abc.abstractmethod
    def count_tokens(self, batch: dict) -> int:
        """Tokens in a micro batch, for throughput and ``tokens_seen``."""

    @abc.abstractmethod
    def train_batches(self, layout: BatchLayout):
        """This rank's micro batches: an iterator with ``state_dict`` / ``load_state_dict``."""

    @abc.abstractmethod
    def val_batches(self, layout: BatchLayout) -> list:
        """This rank's held-out micro batches (possibly empty)."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor | int, dict[str, float]]:
        """(loss summed over n counted units, n, extra scalar metrics: 0-dim tensors or floats)."""

    @abc.abstractmethod
    def write_model(self, directory: Path, state: dict[str, torch.Tensor], config: Any, recipe_text: str) -> None:
        """Write the model files of a checkpoint from a full state dict."""

    @abc.abstractmethod
    def read_model_state(self, directory: Path, config: Any) -> dict[str, torch.Tensor]:
        """The full state dict saved by ``write_model`` (for ``--resume``)."""

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
