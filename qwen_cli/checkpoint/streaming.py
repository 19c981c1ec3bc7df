"""Streaming tensor conversion: read a safetensors checkpoint tensor by tensor, write ours shard by shard.

A conversion is a *plan*: for every output tensor (Hugging Face Qwen2 name) the source tensor it
comes from, optionally a range of its rows (a fused QKV matrix is split by rows). The plan is
checked against the source's metadata before any data is read — every source tensor present,
every shape what the target config expects, nothing left over — so bad input fails fast and
names the tensor. Data is then read with ``safe_open`` one tensor (or row range) at a time and
cast to the target dtype, and at most one output shard is held in memory: a 7B import never
holds two copies of the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from qwen_cli.checkpoint.files import DEFAULT_SHARD_BYTES, weight_files, write_weight_shards
from qwen_cli.errors import UserError
from qwen_cli.interop.adapter import TensorRef
from qwen_cli.interop.qwen2 import expected_shapes
from qwen_cli.model import ModelConfig

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}
_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


class WeightReader:
    """Lazy access to the tensors of a (possibly sharded) safetensors checkpoint directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stack = contextlib.ExitStack()
        self._handles: dict[str, object] = {}
        self._files: dict[str, Path] = {}
        pickled = sorted(p.name for p in directory.glob("pytorch_model*.bin"))
        if pickled and not any(directory.glob("*.safetensors")):
            raise UserError(f"{directory / pickled[0]}: PyTorch pickle weights are not read (unsafe); "
                            "re-save them as safetensors (transformers: save_pretrained(safe_serialization=True))")
        try:
            for path in weight_files(directory):
                try:
                    handle = self._stack.enter_context(safe_open(str(path), framework="pt"))
                except (SafetensorError, OSError) as exc:
                    raise UserError(f"{path}: unreadable safetensors file ({exc})") from None
                for name in handle.keys():
                    self._handles[name] = handle
                    self._files[name] = path
        except BaseException:
            self._stack.close()
            raise

    def __enter__(self) -> WeightReader:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def names(self) -> list[str]:
        return list(self._handles)

    def __contains__(self, name: str) -> bool:
        return name in self._handles

    def file(self, name: str) -> Path:
        return self._files[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[name].get_slice(name).get_shape())

    def dtype(self, name: str) -> torch.dtype:
        code = self._handles[name].get_slice(name).get_dtype()
        if code not in _SAFETENSORS_DTYPES:
            raise UserError(f"{self._files[name]}: tensor {name} has unsupported dtype {code}")
        return _SAFETENSORS_DTYPES[code]

    def read(self, ref: TensorRef) -> torch.Tensor:
        """The tensor (or its row range), read from disk now."""
        handle = self._handles[ref.name]
        try:
            if ref.rows is None:
                return handle.get_tensor(ref.name)
            return handle.get_slice(ref.name)[ref.rows[0]:ref.rows[1]]
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{self._files[ref.name]}: cannot read tensor {ref.name} ({exc})") from None


def check_plan(reader: WeightReader, plan: dict[str, TensorRef], config: ModelConfig,
               ignorable: Callable[[str], bool] = lambda name: False) -> None:
    """Raise UserError naming the first tensor that is missing, mis-shaped or unexpected."""
    shapes = expected_shapes(config)
    where = reader.directory
    for out_name, ref in plan.items():
        if ref.zeros is not None:  # not read from the source
            continue
        if ref.name not in reader:
            raise UserError(f"{where}: tensor {ref.name} missing from the weights")
        shape = reader.shape(ref.name)
        if ref.rows is not None:
            start, stop = ref.rows
            if not shape or stop > shape[0]:
                raise UserError(f"{reader.file(ref.name)}: tensor {ref.name} has shape {list(shape)}, "
                                f"too small for rows {start}:{stop} of config.json")
            shape = (stop - start, *shape[1:])
        if shape != shapes[out_name]:
            raise UserError(f"{reader.file(ref.name)}: tensor {ref.name} has shape {list(shape)}, "
                            f"config.json implies {list(shapes[out_name])}")
        reader.dtype(ref.name)
    used = {ref.name for ref in plan.values() if ref.zeros is None}
    for name in reader.names():
        if name not in used and not ignorable(name):
            raise UserError(f"{reader.file(name)}: unexpected tensor {name} (architecture not supported)")


def source_dtype(reader: WeightReader, plan: dict[str, TensorRef]) -> torch.dtype:
    """The dtype of the source's embedding (the first tensor of every plan): the default output dtype."""
    return reader.dtype(next(iter(plan.values())).name)


def write_plan(reader: WeightReader, plan: dict[str, TensorRef], directory: Path, dtype: torch.dtype,
               shard_bytes: int = DEFAULT_SHARD_BYTES,
               on_tensor: Callable[[str], None] | None = None) -> None:
    """Stream every planned tensor from ``reader`` into safetensors files in ``directory``."""
    specs = {name: (shape, dtype) for name, shape in _plan_shapes(reader, plan).items()}

    def produce(name: str) -> torch.Tensor:
        ref = plan[name]
        if ref.zeros is not None:
            return torch.zeros(ref.zeros, dtype=dtype)
        return reader.read(ref).to(dtype).contiguous()

    write_weight_shards(directory, specs, produce, shard_bytes, on_tensor)


def _plan_shapes(reader: WeightReader, plan: dict[str, TensorRef]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for out_name, ref in plan.items():
        if ref.zeros is not None:
            shapes[out_name] = ref.zeros
            continue
        shape = reader.shape(ref.name)
        shapes[out_name] = shape if ref.rows is None else (ref.rows[1] - ref.rows[0], *shape[1:])
    return shapes

