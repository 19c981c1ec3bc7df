"""Multi-process training under ``torchrun``: process group, FSDP2 sharding, full state dicts.

The model never knows it is distributed (principle 2): :func:`shard` wraps it from outside
with FSDP2 (``fully_shard`` on every block the stage names, then on the root), gloo on CPU and
NCCL on GPU. A multi-process run checkpoints each rank's *shards* (:func:`sharded_state`, the DTensors
as FSDP2 holds them, written by DCP); single-process checkpoints and the full layout hold *full* (CPU)
state dicts. Both are keyed by parameter name, so a checkpoint written by N processes loads in M. Without ``torchrun`` (no
``WORLD_SIZE`` in the environment) everything here degrades to the single-process case.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)

from qwen_cli.errors import UserError

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    control: Any = None  # a gloo group for host-side flags when the default group is NCCL (None: the default)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` = this rank's CUDA device when available, else CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: 'cuda' requested but no CUDA device is available")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init(device_name: str = "auto", backend: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group when launched by it; otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(device=pick_device(device_name))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    control = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    return DistInfo(rank, world_size, local_rank, device, control)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def mixed_precision(compute_dtype: torch.dtype):
    """FSDP2's policy for ``compute_dtype``: bf16 gathered copies (half the all-gather bytes, no per-layer
    autocast copies kept for backward) with fp32 gradient reduction, over the fp32 sharded master weights;
    None (all fp32) otherwise."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if compute_dtype != torch.bfloat16:
        return None
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard(module: nn.Module, blocks: list[nn.Module], info: DistInfo, reshard_after_forward: bool,
          compute_dtype: torch.dtype = torch.float32) -> nn.Module:
    """FSDP2: shard each of ``blocks`` (submodules of ``module``), then the root (embeddings, norm, output),
    with :func:`mixed_precision` for ``compute_dtype`` (``train.dtype``)."""
    if not info.enabled:
        return module
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = mixed_precision(compute_dtype) or MixedPrecisionPolicy()
    for block in blocks:
        fully_shard(block, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    fully_shard(module, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    return module


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (in place; returned for chaining)."""
    if info.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """True on every rank if any rank's ``flag`` is True (e.g. a stop signal seen by one rank).

    The flag travels on the CPU (gloo), so asking every step never waits for the GPU's queued work."""
    if not info.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=info.control)
    return bool(value.item())


def gather_to_main(obj: Any, info: DistInfo) -> list[Any] | None:
    """Every rank's ``obj`` (picklable; sent between the job's own processes only) on rank 0, in rank
    order; None on the other ranks. Every rank must call it."""
    if not info.enabled:
        return [obj]
    gathered = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, gathered, dst=0, group=info.control)
    return gathered


def full_model_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Gathered CPU state dict by parameter name (every rank must call it; all get the result)."""
    return get_model_state_dict(module, options=FULL)


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Gathered optimizer state keyed by parameter name: ``{"state": {...}, "param_groups": [...]}``."""
    return get_optimizer_state_dict(module, optimizer, options=FULL)


def load_full_model_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True, strict=True))


def load_full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))


def new_cpu_group(info: DistInfo):
    """A gloo group of every rank for work beside training (an asynchronous checkpoint's collectives run in
    a background thread and must not interleave with the training's); every rank must call it. None alone."""
    return dist.new_group(backend="gloo") if info.enabled else None


def sharded_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict, list]:
    """(model tensors, optimizer ``state``, optimizer ``param_groups``) as this rank holds them (DTensor
    shards under FSDP2, plain tensors in one process): the live tensors, not copies; keyed by name."""
    model, optim = get_state_dict(module, optimizer)
    return model, optim["state"], optim["param_groups"]


def load_sharded_state(module: nn.Module, optimizer: torch.optim.Optimizer, model: dict, state: dict,
                       param_groups: list) -> None:
    """Put what :func:`sharded_state` returned (filled from a checkpoint) back into the module and optimizer."""
    set_state_dict(module, optimizer, model_state_dict=model,
                   optim_state_dict={"state": state, "param_groups": param_groups})


def copy_model_state(module: nn.Module, state: Mapping[str, torch.Tensor], where: Any) -> None:
    """One process: copy ``state`` (our names) into ``module`` one tensor at a time, so a lazy ``state`` (read
    when looked up) never holds the weights a second time; UserError naming ``where`` on a mismatch."""
    own = module.state_dict()
    if set(own) != set(state):
        raise UserError(f"{where}: the weights do not match the model (tensor {sorted(set(own) ^ set(state))[0]})")
    with torch.no_grad():
        for name, tensor in own.items():
            value = state[name]
            if value.shape != tensor.shape:
                raise UserError(f"{where}: tensor {name} has shape {list(value.shape)}, the model {list(tensor.shape)}")
            tensor.copy_(value)
