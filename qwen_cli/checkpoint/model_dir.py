"""Model checkpoint directories: safetensors weights + config + tokenizer + recipe, written atomically.

Layout (a Hugging Face Qwen2 model directory, so transformers/vLLM/lm-eval read it as is):

    config.json                      Qwen2Config (+ a ``qwen_cli`` key with our extra fields)
    model.safetensors                weights with Qwen2 names; above ``shard_bytes`` they are split
                                     into model-0000N-of-0000M.safetensors + model.safetensors.index.json
    qwen_tokenizer.json, *.tiktoken  our tokenizer format; vocab.json, merges.txt,
                                     tokenizer_config.json for transformers
    recipe.toml                      the resolved recipe that produced the weights (when trained)
    checksums.json                   sha256 of every file above; verified on load

Training state for exact resume lives beside these files (``qwen_cli.checkpoint.train_state``);
file names, checksums and shards are in ``qwen_cli.checkpoint.files``, the Qwen2 naming in
``qwen_cli.interop.qwen2``.
Only safetensors and JSON are ever read back: nothing is unpickled.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from qwen_cli.checkpoint.export import write_model_state
from qwen_cli.checkpoint.files import (
    CHECKSUM_FILE,
    CONFIG_FILE,
    DEFAULT_SHARD_BYTES,
    LazyTensors,
    verify_checksums,
    write_checksums,
)
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_dir
from qwen_cli.interop.qwen2 import config_from_hf, config_to_hf, from_hf_state_dict
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.model.config import ConfigError
from qwen_cli.model.rope import rotary_inv_freq
from qwen_cli.tokenizer import load_tokenizer
from qwen_cli.tokenizer.core import vocab_size_of


def write_model_files(
    directory: Path,
    model: QwenModel,
    tokenizer=None,
    recipe_text: str | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> None:
    """Write config, weights, tokenizer and recipe into an existing (temporary) directory."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    write_model_state(Path(directory), state, model.config, tokenizer, recipe_text, shard_bytes)


def save_model(target, model: QwenModel, tokenizer=None, recipe_text: str | None = None,
               shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Atomically write a complete model directory at ``target`` (replacing any previous one)."""
    with atomic_dir(target) as tmp:
        write_model_files(tmp, model, tokenizer, recipe_text, shard_bytes)
        write_checksums(tmp)
    return Path(target)


def read_config_json(directory: Path) -> dict:
    """The ``config.json`` of a model directory as a dict; a one-line ``UserError`` when it is missing or not
    a JSON object."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{directory}: not a checkpoint directory (no {CONFIG_FILE})")
    try:
        hf = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(hf, dict):
        raise UserError(f"{path}: not a JSON object")
    return hf


def read_config(directory: Path) -> ModelConfig:
    """The ``ModelConfig`` of a checkpoint directory, checked (types, ranges, size) before any tensor
    exists; a ``UserError`` names ``config.json`` and the key at fault."""
    path = directory / CONFIG_FILE
    hf = read_config_json(directory)
    try:
        return config_from_hf(hf)
    except ConfigError as exc:
        raise UserError(exc.at(str(path))) from None


def copy_with_config(src: Path, dst: Path, config: ModelConfig, overwrite: bool = False) -> None:
    """Write ``dst``: every file of the checkpoint ``src`` (checksums verified) with ``config.json``
    rewritten for ``config`` (same weights), atomically."""
    verify_checksums(src)
    hf = json.loads((src / CONFIG_FILE).read_text())
    for key in ("use_sliding_window", "sliding_window", "max_window_layers", "layer_types"):
        hf.pop(key, None)  # replaced below by what ``config`` says
    kept = {key: hf[key] for key in ("bos_token_id", "eos_token_id", "torch_dtype") if key in hf}
    hf.update(config_to_hf(config, getattr(torch, str(hf.get("torch_dtype")), torch.float32)))
    hf.update(kept)
    with atomic_dir(dst, overwrite=overwrite) as tmp:
        for path in src.iterdir():
            if path.is_file() and path.name not in (CONFIG_FILE, CHECKSUM_FILE):
                shutil.copyfile(path, tmp / path.name)
        (tmp / CONFIG_FILE).write_text(json.dumps(hf, indent=2))
        write_checksums(tmp)


def read_model_state(directory: Path, config: ModelConfig, device: torch.device | str = "cpu",
                     dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Our-named model state dict of a checkpoint (weights only; checksums verified by the caller), on
    ``device`` in ``dtype`` (floating tensors; None keeps the file's). The file's tensors are read one by
    one as they are converted, so the weights are held about once."""
    try:
        return from_hf_state_dict(LazyTensors(directory, device, dtype), config)
    except KeyError as exc:
        raise UserError(f"{directory}: tensor {exc.args[0]} missing from the weights") from None


def check_vocabulary(directory: Path, config: ModelConfig) -> None:
    """The directory's own tokenizer must fit the embedding: an id at or past its rows is a one-line
    ``UserError`` naming both sizes (the model would otherwise fail with an IndexError mid-run)."""
    size = vocab_size_of(directory)
    if size is not None and size > config.vocab_size:
        raise UserError(f"{directory}: the tokenizer has {size} tokens (ids up to {size - 1}) but the model's "
                        f"embedding has {config.vocab_size} rows ({CONFIG_FILE} vocab_size)")


def load_model(directory, device="cpu", dtype: torch.dtype | None = None, verify: bool = True) -> QwenModel:
    """Build a QwenModel from a checkpoint directory (ours or any Qwen2-layout one), its tokenizer's size
    checked against the embedding (:func:`check_vocabulary`).

    The model is built on the meta device and takes the checkpoint's tensors as its parameters,
    read one at a time straight to ``device`` and ``dtype``: peak memory is about one copy of the
    weights."""
    directory = Path(directory)
    config = read_config(directory)
    check_vocabulary(directory, config)
    if verify:
        verify_checksums(directory)
    state = read_model_state(directory, config, device, dtype)
    with torch.device("meta"):
        model = QwenModel(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise UserError(f"{directory}: weights do not match {CONFIG_FILE}: {first}") from None
    del state
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.inv_freq = rotary_inv_freq(config.head_dim, config.rope_theta)  # was built on meta
    return model.to(device=device, dtype=dtype).eval()  # the buffers (parameters are already there)


def load(directory, device="cpu", dtype: torch.dtype | None = None):
    """``(model, tokenizer)`` from a checkpoint directory."""
    model = load_model(directory, device=device, dtype=dtype)
    return model, load_tokenizer(str(directory))
