"""``qwen convert``: any supported checkpoint directory -> our checkpoint directory or a HF export.

Sources (``--from``, detected from ``config.json`` and tensor names when ``auto``):

    native   a qwen_cli checkpoint (Qwen2 layout with our ``qwen_cli`` config key / checksums)
    qwen2    a Qwen2-family Hugging Face directory (Qwen2, Qwen2.5; GQA, tied embeddings)
    qwen1    a released Qwen (v1) directory (``transformer.h.N`` names, ``qwen.tiktoken``)
    llama    a Llama/Mistral Hugging Face directory (zero q/k/v biases; ``interop.llama``)
    gguf     a llama.cpp ``.gguf`` file (dequantised; tokenizer and chat template from its metadata)

Targets (``--to``): ``native`` writes our checkpoint directory (which transformers already
loads); ``hf`` additionally writes ``generation_config.json`` (stop at ``<|im_end|>`` or
``<|endoftext|>``) for transformers/vLLM unless the source has its own. Both carry the
tokenizer as Hugging Face files: the source's own (a released Qwen2's or a Llama's, with its
chat template), built from a GGUF's metadata, or generated from ours with the ChatML chat
template; a vocabulary with Qwen's layout is also written in our format. A foreign tokenizer
(any other ``tokenizer.json``) is kept as released, after checking it fits the embedding. ``recipe.toml`` and a
source ``generation_config.json`` are copied as they are. Nothing is written until the whole
input has been checked, and the output appears atomically.

Model files are untrusted input: the chat template (a directory's or a GGUF's) is rendered once,
under its time and memory budget (``tokenizer.chat_jinja``), and refused when it fails; bos/eos/pad
ids must be rows of the embedding; a weight holding NaN or Inf is refused (naming the tensor) unless
``allow_nonfinite`` — that check runs as each tensor streams into the temporary output, which is
removed on refusal, so nothing is written either way.
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
from qwen_cli.checkpoint.model_dir import check_vocabulary, read_config_json
from qwen_cli.checkpoint.streaming import DTYPES, WeightReader, check_plan, source_dtype, write_plan
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_dir
from qwen_cli.interop import FAMILIES, gguf_file, gguf_tokenizer, llama, qwen1, qwen2
from qwen_cli.interop.adapter import TensorRef
from qwen_cli.model import ModelConfig
from qwen_cli.tokenizer import Tokenizer, load_tokenizer
from qwen_cli.tokenizer.chat_jinja import check_template
from qwen_cli.tokenizer.core import CONFIG_FILE as TOKENIZER_CONFIG_FILE
from qwen_cli.tokenizer.protocol import TextTokenizer

SOURCES = ("auto", "qwen1", "qwen2", "llama", "gguf", "native")
TARGETS = ("native", "hf")
HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                      "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json")


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
    if model_type in llama.MODEL_TYPES:
        return "llama"
    if model_type == qwen2.MODEL_TYPE:
        native = qwen2.EXTRA_KEY in hf or (src / CHECKSUM_FILE).is_file() or (src / TOKENIZER_CONFIG_FILE).is_file()
        return "native" if native else "qwen2"
    raise UserError(f"{src / CONFIG_FILE}: unknown model_type {model_type!r} "
                    f"(supported: {qwen1.MODEL_TYPE!r} for Qwen-1, {qwen2.MODEL_TYPE!r} for Qwen2 and ours, "
                    f"{' and '.join(map(repr, llama.MODEL_TYPES))} for the Llama family)")


def parse_dtype(name: str | None) -> torch.dtype | None:
    """``None``/``auto`` keeps the source dtype; else fp32|bf16|fp16 (or their long names)."""
    if name in (None, "auto"):
        return None
    if name not in DTYPES:
        raise UserError(f"--dtype {name!r}: expected auto, fp32, bf16 or fp16")
    return DTYPES[name]


@dataclass
class Source:
    """An opened conversion source: its tensors, the config and plan its family derives, its config.json."""

    fmt: str
    reader: WeightReader | gguf_file.Reader
    config: ModelConfig
    plan: dict[str, TensorRef]
    ignorable: Callable[[str], bool]
    hf: dict


def open_source(src: Path, source_format: str) -> Source:
    """Open ``src`` (a directory, or a ``.gguf`` file) and check its config; the caller closes ``reader``."""
    if src.is_file() and (source_format == "gguf" or (source_format == "auto" and src.suffix == ".gguf")):
        reader = gguf_file.Reader(src)
        try:
            config = gguf_file.model_config(reader)
        except BaseException:
            reader.__exit__()
            raise
        return Source("gguf", reader, config, gguf_file.plan(config, reader.arch), gguf_file.ignorable(config),
                      gguf_file.hf_config(reader))
    if source_format == "gguf":
        raise UserError(f"{src}: --from gguf needs a .gguf file")
    hf = read_hf_config(src)
    fmt = detect_format(src, hf) if source_format == "auto" else source_format
    family = FAMILIES["qwen2" if fmt == "native" else fmt]
    config = family.model_config({"model_type": family.MODEL_TYPE, **hf}, src / CONFIG_FILE)
    if fmt == "native":
        verify_checksums(src)
    return Source(fmt, WeightReader(src), config, family.plan(config), family.ignorable(config), hf)


def check_checkpoint(src: Path) -> None:
    """A model directory's config, checksums, tokenizer size and tensor names and shapes, checked without
    loading the weights: what loading it would refuse, found before a long run starts."""
    source = open_source(src, "auto")
    with source.reader as reader:
        check_plan(reader, source.plan, source.config, source.ignorable)
    check_vocabulary(src, source.config)


def _check_size(size: int, config: ModelConfig, where: Path) -> None:
    if size > config.vocab_size:
        raise UserError(f"{where}: the tokenizer has {size} tokens, more than the model's {config.vocab_size} "
                        "embedding rows")


def _check_tokenizer(source: Source, src: Path) -> TextTokenizer | None:
    """The source's tokenizer (None for a GGUF: built from its metadata), checked to fit the embedding,
    its chat template rendered once and its special ids checked."""
    if source.fmt == "gguf":
        tok = gguf_tokenizer.build_tokenizer(source.reader.metadata, src)
        _check_size(tok.get_vocab_size(with_added_tokens=True), source.config, src)
        meta = source.reader.metadata
        if meta.get("tokenizer.chat_template"):
            check_template(meta["tokenizer.chat_template"], gguf_tokenizer.special_tokens(meta),
                           f"{src} (metadata tokenizer.chat_template)")
        _check_special_ids(source, None, src)
        return None
    tokenizer = load_tokenizer(src)
    _check_size(tokenizer.vocab_size, source.config, src / CONFIG_FILE)
    if tokenizer.chat_template:
        check_template(tokenizer.chat_template, tokenizer.template_tokens, tokenizer.source)
    _check_special_ids(source, tokenizer, src / CONFIG_FILE)
    return tokenizer


def _check_special_ids(source: Source, tokenizer: TextTokenizer | None, where: Path) -> None:
    """bos/eos/pad ids of the output must be integers naming rows of the embedding."""
    for key, value in _special_ids(source, tokenizer).items():
        ids = value if isinstance(value, list) else [value]
        if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < source.config.vocab_size for i in ids):
            raise UserError(f"{where}: {key} {value!r} is not a token id of the model "
                            f"(0 to {source.config.vocab_size - 1})")


class _FiniteReader:
    """``reader`` whose ``read`` refuses a tensor holding NaN or Inf (naming file and tensor)."""

    def __init__(self, reader: WeightReader | gguf_file.Reader) -> None:
        self.reader = reader

    def __getattr__(self, name: str):
        return getattr(self.reader, name)

    def read(self, ref: TensorRef) -> torch.Tensor:
        tensor = self.reader.read(ref)
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{self.reader.file(ref.name)}: tensor {ref.name} holds NaN or Inf values "
                            "(pass --allow-nonfinite to convert it anyway)")
        return tensor


def _qwen_layout(tokenizer: TextTokenizer | None) -> bool:
    """Our tiktoken tokenizer (Qwen's specials at Qwen's ids), not a foreign Hugging Face one."""
    return isinstance(tokenizer, Tokenizer)


def write_tokenizer(source: Source, src: Path, dst: Path, tokenizer: TextTokenizer | None) -> None:
    """The tokenizer files of the converted directory: built from a GGUF's metadata; a directory's own
    Hugging Face files as released (plus ours when the vocabulary has Qwen's layout); or ours with ChatML."""
    if source.fmt == "gguf":
        for name, content in gguf_tokenizer.tokenizer_files(source.reader.metadata, src).items():
            (dst / name).write_bytes(content)
        return
    present = [name for name in HF_TOKENIZER_FILES if (src / name).is_file()]
    keep = not _qwen_layout(tokenizer) or {"tokenizer.json", "tokenizer_config.json"} <= set(present)
    if _qwen_layout(tokenizer):
        tokenizer.save(dst, hf=not keep)
    for name in present if keep else ():
        shutil.copyfile(src / name, dst / name)


def _special_ids(source: Source, tokenizer: TextTokenizer | None) -> dict:
    """bos/eos/pad ids of the output: Qwen's layout, else the source's own (config.json or GGUF metadata)."""
    if _qwen_layout(tokenizer):
        eot = tokenizer.special_ids["<|endoftext|>"]
        return {"bos_token_id": eot, "eos_token_id": eot}
    ids = {key: source.hf[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id")
           if source.hf.get(key) is not None}
    if tokenizer is not None:
        ids.setdefault("eos_token_id", tokenizer.eot_id)
    return ids


def _generation_config(source: Source, tokenizer: TextTokenizer | None) -> dict:
    if _qwen_layout(tokenizer):
        return qwen2.generation_config(tokenizer.special_ids)
    return {**_special_ids(source, tokenizer), "do_sample": False}


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
    allow_nonfinite: bool = False,
) -> ConvertResult:
    """Check ``src`` completely, then write the converted checkpoint at ``dst`` atomically (weights with
    NaN/Inf are refused unless ``allow_nonfinite``)."""
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
    if not src.exists():
        raise UserError(f"{src}: no such file or directory")
    source = open_source(src, source_format)
    config, plan = source.config, source.plan
    with source.reader as reader:
        check_plan(reader, plan, config, source.ignorable)
        tokenizer = _check_tokenizer(source, src)
        out_dtype = out_dtype or source_dtype(reader, plan)
        if on_start is not None:
            on_start(len(plan))
        with atomic_dir(dst) as tmp:
            hf_config = {**qwen2.config_to_hf(config, out_dtype), **_special_ids(source, tokenizer)}
            (tmp / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2))
            write_plan(reader if allow_nonfinite else _FiniteReader(reader), plan, tmp, out_dtype, shard_bytes,
                       on_tensor)
            write_tokenizer(source, src, tmp, tokenizer)
            for name in (RECIPE_FILE, qwen2.GENERATION_CONFIG_FILE):  # kept as they are when present
                if src.is_dir() and (src / name).is_file():
                    shutil.copyfile(src / name, tmp / name)
            if target == "hf" and not (tmp / qwen2.GENERATION_CONFIG_FILE).exists():
                generation = _generation_config(source, tokenizer)
                (tmp / qwen2.GENERATION_CONFIG_FILE).write_text(json.dumps(generation, indent=2))
            write_checksums(tmp)
            files = sorted(p.name for p in tmp.iterdir())
    num_parameters = sum(math.prod(shape) for shape in qwen2.expected_shapes(config).values())
    return ConvertResult(str(src), str(dst), source.fmt, target, str(out_dtype).removeprefix("torch."),
                         len(plan), num_parameters, files, qwen2.hf_limitations(config))
