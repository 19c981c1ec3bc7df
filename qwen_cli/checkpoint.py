"""Model checkpoint directories: safetensors weights + config + tokenizer + recipe, written atomically.

Layout (a Hugging Face Qwen2 model directory, so transformers/vLLM/lm-eval read it as is):

    config.json                      Qwen2Config (+ a ``qwen_cli`` key with our extra fields)
    model.safetensors                weights with Qwen2 names; above ``shard_bytes`` they are split
                                     into model-0000N-of-0000M.safetensors + model.safetensors.index.json
    qwen_tokenizer.json, *.tiktoken  our tokenizer format; vocab.json, merges.txt,
                                     tokenizer_config.json for transformers
    recipe.toml                      the resolved recipe that produced the weights (when trained)
    checksums.json                   sha256 of every file above; verified on load

Training state for exact resume lives beside these files (see ``qwen_cli.train_state``).
Only safetensors and JSON are ever read back: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_dir
from qwen_cli.hf_format import config_from_hf, config_to_hf, from_hf_state_dict, to_hf_state_dict
from qwen_cli.model import ModelConfig, QwenModel, rotary_inv_freq

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


def write_weight_shards(directory: Path, sizes: dict[str, int], produce: Callable[[str], torch.Tensor],
                        shard_bytes: int = DEFAULT_SHARD_BYTES,
                        on_tensor: Callable[[str], None] | None = None) -> None:
    """Write tensors one shard at a time: ``produce(name)`` is called only while its shard is written,
    so at most one shard is held in memory. ``sizes`` (name -> bytes) fixes order and sharding; above
    ``shard_bytes`` the files are model-0000N-of-0000M.safetensors plus an index."""
    shards = plan_shards(sizes, shard_bytes)
    metadata = {"format": "pt"}
    names = [WEIGHTS_FILE] if len(shards) == 1 else [
        f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)
    ]
    for file_name, shard in zip(names, shards, strict=True):
        tensors = {}
        for name in shard:
            tensors[name] = produce(name)
            if on_tensor is not None:
                on_tensor(name)
        save_file(tensors, directory / file_name, metadata=metadata)
        del tensors
    if len(shards) > 1:
        weight_map = {name: file_name for file_name, shard in zip(names, shards, strict=True) for name in shard}
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2))


def write_weights(directory: Path, tensors: dict[str, torch.Tensor], shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
    """Write HF-named tensors as one safetensors file, or shards plus an index above ``shard_bytes``."""
    sizes = {name: t.numel() * t.element_size() for name, t in tensors.items()}
    write_weight_shards(directory, sizes, tensors.__getitem__, shard_bytes)


def write_checksums(directory: Path) -> None:
    """Record sha256 of every file in the directory (subdirectories excluded)."""
    sums = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != CHECKSUM_FILE}
    (directory / CHECKSUM_FILE).write_text(json.dumps(sums, indent=2))


def write_model_files(
    directory: Path,
    model: QwenModel,
    tokenizer=None,
    recipe_text: str | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> None:
    """Write config, weights, tokenizer and recipe into an existing (temporary) directory."""
    directory = Path(directory)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    dtype = next(iter(state.values())).dtype
    special_ids = tokenizer.special_ids if tokenizer is not None else None
    hf_config = config_to_hf(model.config, dtype, special_ids)
    (directory / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2))
    write_weights(directory, to_hf_state_dict(state, model.config), shard_bytes)
    if tokenizer is not None:
        tokenizer.save(directory)
    if recipe_text is not None:
        (directory / RECIPE_FILE).write_text(recipe_text)


def save_model(target, model: QwenModel, tokenizer=None, recipe_text: str | None = None,
               shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Atomically write a complete model directory at ``target`` (replacing any previous one)."""
    with atomic_dir(target) as tmp:
        write_model_files(tmp, model, tokenizer, recipe_text, shard_bytes)
        write_checksums(tmp)
    return Path(target)


def verify_checksums(directory: Path) -> None:
    """Raise UserError naming the first file that is missing or whose sha256 differs."""
    path = directory / CHECKSUM_FILE
    if not path.exists():
        return  # checkpoints from other tools (released Qwen2 models) carry no checksums
    for name, expected in json.loads(path.read_text()).items():
        file = directory / name
        if not file.exists():
            raise UserError(f"{file}: missing from checkpoint (listed in {CHECKSUM_FILE})")
        if sha256_file(file) != expected:
            raise UserError(f"{file}: checksum mismatch, the file is truncated or altered")


def read_config(directory: Path) -> ModelConfig:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{directory}: not a checkpoint directory (no {CONFIG_FILE})")
    try:
        hf = json.loads(path.read_text())
        return config_from_hf(hf)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: invalid model config ({exc})") from None


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


def read_hf_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a single-file or sharded safetensors checkpoint, by HF name."""
    tensors: dict[str, torch.Tensor] = {}
    for path in weight_files(directory):
        try:
            tensors.update(load_file(path))
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{path}: unreadable safetensors file ({exc})") from None
    return tensors


def load_model(directory, device="cpu", dtype: torch.dtype | None = None, verify: bool = True) -> QwenModel:
    """Build a QwenModel from a checkpoint directory (ours or any Qwen2-layout one)."""
    directory = Path(directory)
    config = read_config(directory)
    if verify:
        verify_checksums(directory)
    try:
        state = from_hf_state_dict(read_hf_tensors(directory), config)
    except KeyError as exc:
        raise UserError(f"{directory}: tensor {exc.args[0]} missing from the weights") from None
    with torch.device("meta"):
        model = QwenModel(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise UserError(f"{directory}: weights do not match {CONFIG_FILE}: {first}") from None
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.inv_freq = rotary_inv_freq(config.head_dim, config.rope_theta)  # was built on meta
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def load(directory, device="cpu", dtype: torch.dtype | None = None):
    """``(model, tokenizer)`` from a checkpoint directory."""
    from qwen_cli.tokenizer import load_tokenizer

    model = load_model(directory, device=device, dtype=dtype)
    return model, load_tokenizer(str(directory))
