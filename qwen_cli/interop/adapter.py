"""What a checkpoint-family adapter provides, and the tensor reference its import plan is made of.

An adapter is a module in ``qwen_cli.interop`` (one per family: ``qwen1``, ``qwen2``) that owns
the family's names and config mapping, in the style of torchtitan's ``state_dict_adapter``:

    MODEL_TYPE                     the ``model_type`` its ``config.json`` carries
    model_config(hf, path)         ``ModelConfig`` from its ``config.json``; ``UserError`` naming the
                                   key for anything our model cannot run
    plan(config)                   Qwen2 tensor name -> :class:`TensorRef` into its safetensors (the
                                   import direction; ``qwen_cli.checkpoint.convert`` streams it)
    ignorable(config)              predicate for source tensors that may be present but are unused

Our own directories use the Qwen2 layout, so ``qwen2`` also maps our in-memory names and config
to that layout and back (``to_hf_state_dict`` / ``from_hf_state_dict``, ``config_to_hf`` /
``config_from_hf``). A new family (Llama, GGUF …) is a new module beside these, added to
``qwen_cli.interop.FAMILIES``. ``llama`` (Llama/Mistral directories) and ``gguf_file`` (llama.cpp
GGUF files, which bring their own tensor reader and tokenizer) are such families.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorRef:
    """Where an output tensor comes from: a source tensor, or rows ``[start, stop)`` of it, or nothing
    (``zeros``: a tensor of zeros of that shape, for a bias the source family does not have)."""

    name: str
    rows: tuple[int, int] | None = None
    zeros: tuple[int, ...] | None = None
