"""Sharded checkpoints with ``torch.distributed.checkpoint`` (DCP): every rank writes its own shards.

A checkpoint written by several processes holds the model and AdamW tensors as DCP shards beside the
trainer state (``qwen_cli.checkpoint.train_state``):

    .metadata          DCP's index: each tensor's global shape and dtype, and which byte range of
                       which file holds which chunk of it
    __R_0.distcp       rank R's chunks of ``model.<name>`` (our parameter names) and
                       ``optim.state.<name>.{step,exp_avg,exp_avg_sq}``

Only tensors go into the shards (AdamW's hyper-parameters stay in ``trainer_state.json``), so loading
never unpickles anything but DCP's index, which :class:`SafeReader` reads with an allow-list of the
classes DCP writes there; each tensor is read with ``torch.load(weights_only=True)``.

Loading reshards: :func:`load` fills a state dict of the *current* layout (DTensors of any world
size, or plain tensors in one process) in place, so a checkpoint of N processes resumes in M.
:class:`ShardedTensors` reads the model one whole tensor at a time for a streaming export.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata

from qwen_cli.checkpoint.files import TensorSpec
from qwen_cli.errors import UserError

METADATA_FILE = ".metadata"
SHARD_SUFFIX = ".distcp"
MODEL, OPTIM = "model", "optim"
# DCP warns on every single-process call (also from an asynchronous save's thread) that it assumes one process.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized, assuming")
_ALLOWED = {  # (module, name) of every global DCP's .metadata pickle refers to
    **{("torch.distributed.checkpoint.metadata", name): getattr(dcp_metadata, name) for name in (
        "Metadata", "MetadataIndex", "StorageMeta", "ChunkStorageMetadata", "TensorProperties",
        "TensorStorageMetadata", "BytesStorageMetadata", "_MEM_FORMAT_ENCODING")},
    ("torch", "Size"): torch.Size,
}


class _IndexUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) == ("torch.serialization", "_get_layout"):
            return torch.serialization._get_layout
        if (module, name) == ("torch.distributed.checkpoint.filesystem", "_StorageInfo"):
            from torch.distributed.checkpoint.filesystem import _StorageInfo

            return _StorageInfo
        if module == "pathlib" and name in ("PosixPath", "PurePosixPath"):
            import pathlib

            return getattr(pathlib, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a DCP index")


def read_index(directory: Path) -> Metadata:
    """DCP's ``.metadata`` of ``directory``, unpickled with an allow-list (UserError when unreadable)."""
    path = directory / METADATA_FILE
    try:
        with open(path, "rb") as handle:
            index = _IndexUnpickler(handle).load()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: unreadable DCP index ({exc})") from None
    if not isinstance(index, Metadata):
        raise UserError(f"{path}: not a DCP index")
    return index


class SafeReader(FileSystemReader):
    """``FileSystemReader`` whose index is read by :func:`read_index` instead of a bare ``pickle.load``."""

    def read_metadata(self, *args, **kwargs) -> Metadata:
        index = read_index(Path(self.path))
        if index.storage_meta is None:
            index.storage_meta = dcp_metadata.StorageMeta()
        index.storage_meta.load_id = self.load_id
        return index


def is_sharded(directory: Path) -> bool:
    """Whether a checkpoint directory holds DCP shards (else full safetensors files)."""
    return (directory / METADATA_FILE).is_file()


def save(directory: Path, state: dict, process_group=None, asynchronous: bool = False) -> Future | None:
    """Every rank writes its shards of ``state`` (``{MODEL: ..., OPTIM: ...}``, tensors only) into
    ``directory``; collective. ``asynchronous``: the tensors are copied to host memory now and written by
    a background thread (returns its future; ``process_group`` must then be one no other work uses)."""
    writer = FileSystemWriter(str(directory))
    no_dist = not torch.distributed.is_initialized()
    if asynchronous:
        return dcp.async_save(state, storage_writer=writer, process_group=process_group, no_dist=no_dist)
    dcp.save(state, storage_writer=writer, process_group=process_group, no_dist=no_dist)
    return None


def load(directory: Path, state: dict, process_group=None) -> None:
    """Fill ``state`` (this run's layout: DTensors or plain tensors) in place from ``directory``'s shards."""
    no_dist = not torch.distributed.is_initialized()
    try:
        dcp.load(state, storage_reader=SafeReader(str(directory)), process_group=process_group, no_dist=no_dist)
    except (RuntimeError, ValueError, KeyError) as exc:  # DCP wraps per-rank failures in CheckpointException
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{directory}: cannot load the sharded checkpoint ({first})") from None


def verify(directory: Path) -> None:
    """UserError naming the first shard file that is missing or shorter than the index says."""
    needed: dict[str, int] = {}
    for info in read_index(directory).storage_data.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(needed.items()):
        path = directory / name
        if not path.is_file():
            raise UserError(f"{path}: missing from checkpoint (listed in {METADATA_FILE})")
        if path.stat().st_size < size:
            raise UserError(f"{path}: truncated ({path.stat().st_size} of {size} bytes)")


def shard_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SHARD_SUFFIX}"))


class ShardedTensors(Mapping[str, torch.Tensor]):
    """The model tensors of a sharded checkpoint by our parameter name, each read whole from its chunks
    (on any number of files) only when looked up, and never kept: one process holds one tensor."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        prefix = f"{MODEL}."
        self.specs: dict[str, TensorSpec] = {
            key.removeprefix(prefix): (tuple(meta.size), meta.properties.dtype)
            for key, meta in read_index(directory).state_dict_metadata.items()
            if key.startswith(prefix) and isinstance(meta, TensorStorageMetadata)
        }

    def __getitem__(self, name: str) -> torch.Tensor:
        shape, dtype = self.specs[name]
        tensor = torch.empty(shape, dtype=dtype)
        dcp.load({f"{MODEL}.{name}": tensor}, storage_reader=SafeReader(str(self.directory)), no_dist=True)
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)
