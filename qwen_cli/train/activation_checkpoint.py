"""Activation checkpointing applied from outside the model (torchtitan's way): blocks are wrapped, not edited.

``train.activation_checkpointing`` (a recipe key) says which of the stage's blocks keep only their input
for the backward pass and run their forward again there:

  ``none``       — every block keeps what autograd saves (fastest, most memory);
  ``full``       — every block is checkpointed: a layer costs its input, plus one block's activations
                   while it is recomputed (``stages.plan`` counts both);
  ``selective``  — every second block is checkpointed (torchtitan's per-layer selective option with
                   frequency 2): about half the activation memory for half the recomputation.

Wrapping happens before FSDP2 sharding and before ``torch.compile`` of the blocks (torchtitan's order),
with ``torch.utils.checkpoint`` in its non-reentrant form, which gives the same gradients as no
checkpointing (the recomputed forward is the same computation; dropout replays the saved RNG state).
"""

from __future__ import annotations

from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

MODES = ("none", "full", "selective")
SELECTIVE_EVERY = 2  # "selective": every this-many-th block (the 2nd, 4th …) is checkpointed


def checkpointed(mode: str, index: int) -> bool:
    """Whether block ``index`` (0-based) is checkpointed under ``mode``."""
    if mode not in MODES:
        raise ValueError(f"unknown activation_checkpointing {mode!r}; choose one of {', '.join(MODES)}")
    return mode == "full" or (mode == "selective" and index % SELECTIVE_EVERY == SELECTIVE_EVERY - 1)


def apply_activation_checkpointing(root: nn.Module, blocks: list[nn.Module], mode: str) -> list[nn.Module]:
    """Replace each of ``blocks`` (submodules of ``root``) chosen by ``mode`` by its checkpointed wrapper, in
    its parent; returns the blocks as they now are (to shard and compile). Parameter and state-dict names
    are unchanged (the wrapper strips its own prefix), so checkpoints load either way."""
    chosen = {id(block): index for index, block in enumerate(blocks) if checkpointed(mode, index)}
    result = list(blocks)
    for parent in list(root.modules()):
        for child_name, child in list(parent.named_children()):
            if id(child) in chosen:
                wrapper = checkpoint_wrapper(child, preserve_rng_state=True)
                setattr(parent, child_name, wrapper)
                result[chosen.pop(id(child))] = wrapper
    if chosen:
        raise ValueError(f"{len(chosen)} block(s) to checkpoint are not submodules of the model")
    return result
