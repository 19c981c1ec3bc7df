"""``qwen convert``: any supported checkpoint directory -> our checkpoint directory or a HF export.

Sources (``--from``, detected from ``config.json`` and tensor names when ``auto``):

    native   a qwen_cli checkpoint (Qwen2 layout with our ``qwen_cli`` config key / checksums)
    qwen2    a Qwen2-family Hugging Face directory (Qwen2, Qwen2.5; GQA, tied embeddings)
    qwen1    a released Qwen (v1) directory (``transformer.h.N`` names, ``qwen.tiktoken``)

Targets (``--to``): ``native`` writes our checkpoint directory (which transformers already
loads); ``hf`` additionally writes ``generation_config.json`` (stop at ``<|im_end|>`` or
``<|endoftext|>``) for transformers/vLLM unless the source has its own. Both carry the
tokenizer in our format and as Hugging Face files: the source's own (a released Qwen2's, with
its chat template) or generated from ours with the ChatML chat template. ``recipe.toml`` and a
source ``generation_config.json`` are copied as they are. Nothing is written until the whole
input has been checked, and the output appears atomically.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from qwen_cli.checkpoint.files import (
    CHECKSUM_FILE,
    CONFIG_FILE,
    DEFAULT_SHARD_BYTES,
    RECIPE_FILE,
    verify_checksums,
    write_checksums,
)
from qwen_cli.checkpoint.model_dir import read_config_json
from qwen_cli.checkpoint.streaming import DTYPES, WeightReader, check_plan, source_dtype, write_plan
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_dir
from qwen_cli.interop import FAMILIES, qwen1, qwen2
from qwen_cli.tokenizer import Tokenizer, load_tokenizer
from qwen_cli.tokenizer.core import CONFIG_FILE as TOKENIZER_CONFIG_FILE

SOURCES = ("auto", "qwen1", "qwen2", "native")
TARGETS = ("native", "hf")
HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                      "special_tokens_map.json", "added_tokens.json")


@dataclass
class ConvertResult:
    """What a conversion wrote (``--json`` output)."""

    src: str
    dst: str
    source_format: str
    target: str
    dtype: str
    num_tensors: int
    num_parameters: int
    files: list[str]
    not_expressible: list[str]  # settings transformers' Qwen2 cannot express (it runs without them)


def read_hf_config(src: Path) -> dict:
    if not src.is_dir():
        raise UserError(f"{src}: not a directory")
    return read_config_json(src)


def detect_format(src: Path, hf: dict) -> str:
    """``qwen1``, ``qwen2`` or ``native``: from config.json's model_type and architectures, else from
    the tensor names (``transformer.h.N`` is Qwen-1, ``model.layers.N`` Qwen2)."""
    model_type = hf.get("model_type")
    architectures = hf.get("architectures") or []
    if model_type is None and not architectures:
        with WeightReader(src) as reader:
            names = reader.names()
        if any(name.startswith(qwen1.TENSOR_PREFIX) for name in names):
            model_type = qwen1.MODEL_TYPE
        elif any(name.startswith("model.layers.") for name in names):
            model_type = qwen2.MODEL_TYPE
        hf = {**hf, "model_type": model_type}
    if model_type == qwen1.MODEL_TYPE or qwen1.ARCHITECTURE in architectures:
        return "qwen1"
    if model_type == qwen2.MODEL_TYPE:
        native = qwen2.EXTRA_KEY in hf or (src / CHECKSUM_FILE).is_file() or (src / TOKENIZER_CONFIG_FILE).is_file()
        return "native" if native else "qwen2"
    raise UserError(f"{src / CONFIG_FILE}: unknown model_type {model_type!r} "
                    f"(supported: {qwen1.MODEL_TYPE!r} for Qwen-1, {qwen2.MODEL_TYPE!r} for Qwen2 and ours)")


def write_tokenizer(tokenizer: Tokenizer, src: Path, dst: Path) -> None:
    """Our tokenizer files into ``dst``, plus Hugging Face files: the source's own when it has them
    (kept as released, chat template included), else generated from ours with a ChatML template."""
    present = [name for name in HF_TOKENIZER_FILES if (src / name).is_file()]
    keep = {"tokenizer.json", "tokenizer_config.json"} <= set(present)
    tokenizer.save(dst, hf=not keep)
    for name in present if keep else ():
        shutil.copyfile(src / name, dst / name)


def parse_dtype(name: str | None) -> torch.dtype | None:
    """``None``/``auto`` keeps the source dtype; else fp32|bf16|fp16 (or their long names)."""
    if name in (None, "auto"):
        return None
    if name not in DTYPES:
        raise UserError(f"--dtype {name!r}: expected auto, fp32, bf16 or fp16")
    return DTYPES[name]


def convert(
    src: str | Path,
    dst: str | Path,
    source_format: str = "auto",
    target: str = "native",
    dtype: str | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_tensor: Callable[[str], None] | None = None,
) -> ConvertResult:
    """Check ``src`` completely, then write the converted checkpoint at ``dst`` atomically."""
    src, dst = Path(src), Path(dst)
    if source_format not in SOURCES:
        raise UserError(f"--from {source_format!r}: expected one of {', '.join(SOURCES)}")
    if target not in TARGETS:
        raise UserError(f"--to {target!r}: expected one of {', '.join(TARGETS)}")
    out_dtype = parse_dtype(dtype)
    if dst.resolve() == src.resolve():
        raise UserError(f"{dst}: output must differ from the input directory")
    if dst.exists() and not overwrite:
        raise UserError(f"{dst}: already exists (choose another output or pass --overwrite)")
    hf = read_hf_config(src)
    fmt = detect_format(src, hf) if source_format == "auto" else source_format
    family = FAMILIES["qwen2" if fmt == "native" else fmt]
    config = family.model_config({"model_type": family.MODEL_TYPE, **hf}, src / CONFIG_FILE)
    plan = family.plan(config)
    ignorable = family.ignorable(config)
    if fmt == "native":
        verify_checksums(src)
    with WeightReader(src) as reader:
        check_plan(reader, plan, config, ignorable)
        tokenizer = load_tokenizer(src)
        if tokenizer.vocab_size > config.vocab_size:
            raise UserError(f"{src / CONFIG_FILE}: vocab_size {config.vocab_size} is smaller than the "
                            f"tokenizer's {tokenizer.vocab_size} tokens")
        out_dtype = out_dtype or source_dtype(reader, plan)
        if on_start is not None:
            on_start(len(plan))
        with atomic_dir(dst) as tmp:
            (tmp / CONFIG_FILE).write_text(json.dumps(qwen2.config_to_hf(config, out_dtype, tokenizer.special_ids), indent=2))
            write_plan(reader, plan, tmp, out_dtype, shard_bytes, on_tensor)
            write_tokenizer(tokenizer, src, tmp)
            for name in (RECIPE_FILE, qwen2.GENERATION_CONFIG_FILE):  # kept as they are when present
                if (src / name).is_file():
                    shutil.copyfile(src / name, tmp / name)
            if target == "hf" and not (tmp / qwen2.GENERATION_CONFIG_FILE).exists():
                generation = qwen2.generation_config(tokenizer.special_ids)
                (tmp / qwen2.GENERATION_CONFIG_FILE).write_text(json.dumps(generation, indent=2))
            write_checksums(tmp)
            files = sorted(p.name for p in tmp.iterdir())
    num_parameters = sum(math.prod(shape) for shape in qwen2.expected_shapes(config).values())
    return ConvertResult(str(src), str(dst), fmt, target, str(out_dtype).removeprefix("torch."),
                         len(plan), num_parameters, files, qwen2.hf_limitations(config))
