"""Our state dict and a Hugging Face Qwen2 model directory, both ways, one tensor at a time.

The state may be lazy (:class:`qwen_cli.checkpoint.dcp.ShardedTensors` reads each tensor from the
DCP shards when asked; it tells shapes and dtypes through ``specs``): the Qwen2 names are laid out
first (:func:`hf_sources`, which runs ``interop.qwen2.to_hf_state_dict`` on meta tensors to learn which
of our tensors, and which rows of it, each Qwen2 tensor is), then every tensor is read, cut and
streamed into the safetensors files (``files.write_weight_shards``). Peak memory: the largest of our
tensors (a fused QKV or gate/up matrix) plus the one being written, never the model.
:class:`ModelDirTensors` is the way back: our tensors, each read (and its Qwen2 parts concatenated)
when looked up, so a resume copies them into the model one at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from qwen_cli.checkpoint.files import (
    CONFIG_FILE,
    DEFAULT_SHARD_BYTES,
    RECIPE_FILE,
    LazyTensors,
    TensorSpec,
    write_weight_shards,
)
from qwen_cli.errors import UserError
from qwen_cli.interop.qwen2 import config_to_hf, to_hf_state_dict
from qwen_cli.model import ModelConfig, QwenModel

Rows = tuple[int, int] | None


def state_specs(state: Mapping[str, torch.Tensor]) -> dict[str, TensorSpec]:
    """(shape, dtype) of every tensor of ``state``, read from its ``specs`` when it is lazy."""
    specs = getattr(state, "specs", None)
    return dict(specs) if specs is not None else {k: (tuple(v.shape), v.dtype) for k, v in state.items()}


def hf_sources(config: ModelConfig, specs: dict[str, TensorSpec]) -> dict[str, tuple[str, Rows, TensorSpec]]:
    """Qwen2 name -> (our tensor, its row range or None for all of it, the Qwen2 tensor's spec)."""
    meta = {name: torch.empty(shape, dtype=dtype, device="meta") for name, (shape, dtype) in specs.items()}
    owner = {id(tensor): name for name, tensor in meta.items()}
    sources = {}
    for hf_name, view in to_hf_state_dict(meta, config).items():
        base = view if view._base is None else view._base
        rows = None
        if view.shape != base.shape:  # a block of rows (q/k/v of qkv_proj, gate/up of gate_up_proj)
            start = view.storage_offset() // base.stride(0)
            rows = (start, start + view.shape[0])
        sources[hf_name] = (owner[id(base)], rows, (tuple(view.shape), view.dtype))
    return sources


def write_hf_weights(directory: Path, state: Mapping[str, torch.Tensor], config: ModelConfig,
                     shard_bytes: int = DEFAULT_SHARD_BYTES) -> torch.dtype:
    """Our (possibly lazy) state dict as Qwen2-named safetensors in ``directory``; returns their dtype."""
    sources = hf_sources(config, state_specs(state))
    last: dict[str, torch.Tensor] = {}  # the one tensor of ours read last (q, k, v come from one read)

    def produce(hf_name: str) -> torch.Tensor:
        ours, rows, _ = sources[hf_name]
        if ours not in last:
            last.clear()
            last[ours] = state[ours]
        tensor = last[ours]
        return (tensor if rows is None else tensor[rows[0]:rows[1]]).contiguous()

    write_weight_shards(directory, {name: spec for name, (_, _, spec) in sources.items()}, produce, shard_bytes)
    return next(iter(sources.values()))[2][1]


def write_model_state(directory: Path, state: Mapping[str, torch.Tensor], config: ModelConfig, tokenizer=None,
                      recipe_text: str | None = None, shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
    """Config, weights, tokenizer and recipe of a model directory, into an existing (temporary) directory."""
    dtype = write_hf_weights(directory, state, config, shard_bytes)
    special_ids = tokenizer.special_ids if tokenizer is not None else None
    (directory / CONFIG_FILE).write_text(json.dumps(config_to_hf(config, dtype, special_ids), indent=2))
    if tokenizer is not None:
        tokenizer.save(directory)
    if recipe_text is not None:
        (directory / RECIPE_FILE).write_text(recipe_text)


class ModelDirTensors(Mapping[str, torch.Tensor]):
    """Our-named tensors of a Qwen2 model directory (checksums verified by the caller), each read when looked
    up and never kept; a Qwen2 tensor missing from the files is a one-line ``UserError`` up front."""

    def __init__(self, directory: Path, config: ModelConfig) -> None:
        self.hf = LazyTensors(directory)
        with torch.device("meta"):
            self.specs = state_specs(QwenModel(config).state_dict())
        parts: dict[str, list[tuple[int, str]]] = {}
        for hf_name, (ours, rows, _) in hf_sources(config, self.specs).items():
            parts.setdefault(ours, []).append((rows[0] if rows else 0, hf_name))
        if config.tie_word_embeddings:
            parts["lm_head.weight"] = parts["embed_tokens.weight"]
        self.parts = {ours: [hf_name for _, hf_name in sorted(found)] for ours, found in parts.items()}
        for names in self.parts.values():
            for hf_name in names:
                if hf_name not in self.hf:
                    raise UserError(f"{directory}: tensor {hf_name} missing from the weights")

    def __getitem__(self, name: str) -> torch.Tensor:
        names = self.parts[name]
        return self.hf[names[0]] if len(names) == 1 else torch.cat([self.hf[hf_name] for hf_name in names])

    def __iter__(self) -> Iterator[str]:
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)
