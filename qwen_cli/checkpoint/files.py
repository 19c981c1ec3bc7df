"""Files of a checkpoint directory: names, sha256 checksums, safetensors shards (written and read).

Weights above ``shard_bytes`` are split into ``model-0000N-of-0000M.safetensors`` plus
``model.safetensors.index.json``, as Hugging Face does; ``checksums.json`` holds the sha256 of
every file and is verified on load. Only safetensors and JSON are ever read back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from qwen_cli.errors import UserError
from qwen_cli.fsutil import make_shareable

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
RECIPE_FILE = "recipe.toml"
CHECKSUM_FILE = "checksums.json"
DEFAULT_SHARD_BYTES = 5 * 1024**3


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


TensorSpec = tuple[tuple[int, ...], torch.dtype]  # (shape, dtype) of a tensor yet to be produced
_SAFETENSORS_CODES = {torch.float64: "F64", torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
                      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                      torch.uint8: "U8", torch.bool: "BOOL"}


def spec_bytes(spec: TensorSpec) -> int:
    shape, dtype = spec
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def plan_shards(sizes: dict[str, int], shard_bytes: int) -> list[list[str]]:
    """Group tensor names (in order) into shards of at most ``shard_bytes`` (a lone larger tensor
    gets a shard of its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, nbytes in sizes.items():
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def write_safetensors(path: Path, specs: dict[str, TensorSpec], produce: Callable[[str], torch.Tensor],
                      on_tensor: Callable[[str], None] | None = None) -> None:
    """One safetensors file written tensor by tensor: the header comes from ``specs`` (name -> (shape, dtype)),
    then ``produce(name)`` is called for each tensor in order and its bytes go straight to the file, so
    only one tensor is held at a time (``safetensors.save_file`` needs them all at once)."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (shape, dtype) in specs.items():
        end = offset + spec_bytes((shape, dtype))
        header[name] = {"dtype": _SAFETENSORS_CODES[dtype], "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        for name, (shape, dtype) in specs.items():
            tensor = produce(name)
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise ValueError(f"tensor {name}: produced {tuple(tensor.shape)} {tensor.dtype}, "
                                 f"announced {tuple(shape)} {dtype}")
            handle.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
            del tensor
            if on_tensor is not None:
                on_tensor(name)
    make_shareable(path)


def write_weight_shards(directory: Path, specs: dict[str, TensorSpec], produce: Callable[[str], torch.Tensor],
                        shard_bytes: int = DEFAULT_SHARD_BYTES,
                        on_tensor: Callable[[str], None] | None = None) -> None:
    """Write tensors one at a time (:func:`write_safetensors`): ``produce(name)`` is called only while its
    tensor is written, so at most one tensor is held in memory. ``specs`` (name -> (shape, dtype)) fixes
    order and sharding; above ``shard_bytes`` the files are model-0000N-of-0000M.safetensors plus an index."""
    sizes = {name: spec_bytes(spec) for name, spec in specs.items()}
    shards = plan_shards(sizes, shard_bytes)
    names = [WEIGHTS_FILE] if len(shards) == 1 else [
        f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)
    ]
    for file_name, shard in zip(names, shards, strict=True):
        write_safetensors(directory / file_name, {name: specs[name] for name in shard}, produce, on_tensor)
    if len(shards) > 1:
        weight_map = {name: file_name for file_name, shard in zip(names, shards, strict=True) for name in shard}
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2))


def write_weights(directory: Path, tensors: Mapping[str, torch.Tensor], shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
    """Write HF-named tensors as one safetensors file, or shards plus an index above ``shard_bytes``."""
    specs = {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}
    write_weight_shards(directory, specs, lambda name: tensors[name].contiguous(), shard_bytes)


def write_checksums(directory: Path, known: dict[str, str] | None = None,
                    covered: Callable[[str], bool] = lambda name: True) -> None:
    """Record sha256 of every file in the directory (subdirectories excluded) whose name is ``covered``;
    ``known`` (name -> sha256, e.g. of files hard-linked from a verified directory) are taken as they are
    instead of hashed again."""
    known = known or {}
    sums = {p.name: known.get(p.name) or sha256_file(p) for p in sorted(directory.iterdir())
            if p.is_file() and p.name != CHECKSUM_FILE and covered(p.name)}
    (directory / CHECKSUM_FILE).write_text(json.dumps(sums, indent=2))


def read_checksums(directory: Path) -> dict[str, str]:
    """``checksums.json`` of a directory (name -> sha256); empty when there is none."""
    path = directory / CHECKSUM_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def verify_checksums(directory: Path) -> None:
    """Raise UserError naming the first file that is missing or whose sha256 differs."""
    if not (directory / CHECKSUM_FILE).exists():
        return  # checkpoints from other tools (released Qwen2 models) carry no checksums
    for name, expected in read_checksums(directory).items():
        file = directory / name
        if not file.exists():
            raise UserError(f"{file}: missing from checkpoint (listed in {CHECKSUM_FILE})")
        if sha256_file(file) != expected:
            raise UserError(f"{file}: checksum mismatch, the file is truncated or altered")


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint (from the shard index when there is one), all present."""
    index = directory / INDEX_FILE
    if index.exists():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"{index}: invalid shard index ({exc})") from None
    else:
        names = [WEIGHTS_FILE]
    paths = [directory / name for name in names]
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path}: weights file missing")
    return paths


class LazyTensors(Mapping[str, torch.Tensor]):
    """The tensors of a checkpoint's safetensors files by HF name, each read only when looked up, as a
    copy on ``device`` (in ``dtype`` when floating), and never kept. The file is mapped for that one
    read (safetensors maps it; a tensor viewing the map would keep every page read so far resident),
    so a caller that builds a model tensor by tensor holds the weights about once, not twice."""

    def __init__(self, directory: Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> None:
        self.device, self.dtype = device, dtype
        self._where: dict[str, Path] = {}
        for path in weight_files(directory):
            with _opened(path) as handle:
                self._where.update(dict.fromkeys(handle.keys(), path))

    def __getitem__(self, name: str) -> torch.Tensor:
        with _opened(self._where[name]) as handle:
            tensor = handle.get_tensor(name)
            dtype = self.dtype if tensor.is_floating_point() else None
            return tensor.to(device=self.device, dtype=dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


@contextlib.contextmanager
def _opened(path: Path) -> Iterator:
    """``safe_open(path)``, a damaged file raising a one-line ``UserError``."""
    try:
        with safe_open(path, framework="pt") as handle:
            yield handle
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path}: unreadable safetensors file ({exc})") from None


def read_hf_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a single-file or sharded safetensors checkpoint, by HF name."""
    tensors: dict[str, torch.Tensor] = {}
    for path in weight_files(directory):
        try:
            tensors.update(load_file(path))
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{path}: unreadable safetensors file ({exc})") from None
    return tensors
