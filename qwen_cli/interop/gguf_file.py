"""Import of llama.cpp GGUF files (``qwen convert model.gguf OUT``), read with the ``gguf`` package.

A GGUF is one file: metadata (architecture, shapes, tokenizer, chat template) and tensors under
llama.cpp's names, many of them quantised. This adapter turns it into what the other families
provide from a Hugging Face directory:

    hf_config(reader)           a ``config.json`` dictionary (Llama or Qwen2) from ``{arch}.*`` keys;
    model_config(reader)        ... checked by that architecture's adapter (a GGUF has no config.json,
                                so this takes the open file where other families take ``config.json``)
    plan(config, arch)          Qwen2 tensor name -> GGUF tensor name (zero q/k/v biases for Llama)
    Reader                      the tensors in torch orientation as float tensors: dequantised with
                                ``gguf.quants.dequantize`` and, for ``llama``, Q and K rows put back
                                in Hugging Face order (llama.cpp's converter permutes them per head
                                for its interleaved RoPE; :func:`unpermute` is its inverse)

Architectures: ``llama`` (Llama, SmolLM, Mistral without a window) and ``qwen2``. Tensor types:
F32, F16, BF16 and every type ``gguf.quants`` dequantises (Q8_0, Q4_0/1, Q5_0/1, the K-quants …);
anything else is refused with one line naming the tensor. The tokenizer is rebuilt from the
metadata by :mod:`qwen_cli.interop.gguf_tokenizer`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from qwen_cli.errors import UserError
from qwen_cli.interop import llama, qwen2
from qwen_cli.interop.adapter import TensorRef
from qwen_cli.model import ModelConfig

MODEL_TYPE = "gguf"
ARCHITECTURES = {"llama": llama, "qwen2": qwen2}
_PLAIN = {"F32": torch.float32, "F16": torch.float16}
_LAYER = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
          "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight"}


def _gguf():
    """The ``gguf`` package, or one line saying how to get it."""
    try:
        import gguf
    except ImportError:
        raise UserError("reading GGUF files needs the gguf package (pip install gguf)") from None
    return gguf


def unpermute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K permutation: per head, rows (pair, half) -> Hugging Face's (half, pair)."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


class Reader:
    """The tensors of a GGUF file, with the interface of ``checkpoint.streaming.WeightReader``."""

    def __init__(self, path: Path) -> None:
        gguf = _gguf()
        self.directory = path
        try:
            self._reader = gguf.GGUFReader(str(path))
        except (OSError, ValueError, KeyError, IndexError) as exc:
            raise UserError(f"{path}: not a readable GGUF file ({exc})") from None
        self._tensors = {t.name: t for t in self._reader.tensors}
        self.metadata = self._metadata()
        self.arch = self.metadata.get("general.architecture")
        if self.arch not in ARCHITECTURES:
            raise UserError(f"{path}: general.architecture {self.arch!r} is not supported "
                            f"(supported: {', '.join(ARCHITECTURES)})")
        self._permuted = {f"blk.{i}.attn_q.weight": self.key("attention.head_count")
                          for i in range(self.key("block_count"))} if self.arch == "llama" else {}
        if self.arch == "llama":
            kv = self.metadata.get(f"{self.arch}.attention.head_count_kv", self.key("attention.head_count"))
            self._permuted.update({f"blk.{i}.attn_k.weight": kv for i in range(self.key("block_count"))})

    def _metadata(self) -> dict:
        """Every metadata key -> its value (a string, number or list)."""
        out = {}
        for key, field in self._reader.fields.items():
            try:
                out[key] = field.contents()
            except (ValueError, IndexError, TypeError) as exc:
                raise UserError(f"{self.directory}: metadata {key} unreadable ({exc})") from None
        return out

    def key(self, suffix: str):
        """The metadata value ``{arch}.{suffix}``; UserError naming it when missing."""
        key = f"{self.arch}.{suffix}"
        if key not in self.metadata:
            raise UserError(f"{self.directory}: metadata {key} missing")
        return self.metadata[key]

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self._reader = None

    def names(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def file(self, name: str) -> Path:
        return self.directory

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(n) for n in reversed(self._tensors[name].shape))

    def dtype(self, name: str) -> torch.dtype:
        """float16/float32 as stored; every dequantised type (and BF16) reads as float32."""
        kind = self._tensors[name].tensor_type
        if kind.name in _PLAIN:
            return _PLAIN[kind.name]
        if kind not in _gguf().quants._type_traits:
            raise UserError(f"{self.directory}: tensor {name} has type {kind.name}, which cannot be dequantised "
                            "(F32, F16, BF16, Q8_0, Q4_0/1, Q5_0/1, K-quants, IQ-quants are read)")
        return torch.float32

    def read(self, ref: TensorRef) -> torch.Tensor:
        tensor = self._tensors[ref.name]
        data = tensor.data
        if tensor.tensor_type.name not in _PLAIN:
            data = _gguf().quants.dequantize(data, tensor.tensor_type)
        out = torch.from_numpy(np.array(data)).reshape(self.shape(ref.name))  # a copy: the file is mapped read-only
        if ref.name in self._permuted:
            out = unpermute(out, self._permuted[ref.name])
        return out if ref.rows is None else out[ref.rows[0]:ref.rows[1]]


def hf_config(reader: Reader) -> dict:
    """A Llama/Qwen2 ``config.json`` dictionary from the file's ``{arch}.*`` metadata."""
    meta, arch, path = reader.metadata, reader.arch, reader.directory
    heads = reader.key("attention.head_count")
    hidden = reader.key("embedding_length")
    head_dim = hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads else None
    for suffix in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        value = meta.get(f"{arch}.{suffix}", head_dim)
        if value != head_dim:
            raise UserError(f"{path}: metadata {arch}.{suffix} {value} differs from the head size {head_dim}; "
                            "cannot be represented")
    if "rope_freqs.weight" in reader:
        raise UserError(f"{path}: tensor rope_freqs.weight (llama3-style RoPE scaling) cannot be represented "
                        "(plain RoPE only)")
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling != "none":
        raise UserError(f"{path}: metadata {arch}.rope.scaling.type {scaling!r} cannot be represented "
                        "(plain RoPE only)")
    tokens = meta.get("tokenizer.ggml.tokens")
    return {
        "model_type": arch,
        "vocab_size": meta.get(f"{arch}.vocab_size", len(tokens) if tokens else None),
        "hidden_size": hidden,
        "intermediate_size": reader.key("feed_forward_length"),
        "num_hidden_layers": reader.key("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": meta.get(f"{arch}.attention.head_count_kv", heads),
        "max_position_embeddings": meta.get(f"{arch}.context_length", 2048),
        "rope_theta": float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        "rms_norm_eps": float(reader.key("attention.layer_norm_rms_epsilon")),
        "tie_word_embeddings": "output.weight" not in reader,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
    }


def model_config(reader: Reader) -> ModelConfig:
    """``ModelConfig`` of the file, checked by its architecture's adapter (names the metadata)."""
    return ARCHITECTURES[reader.arch].model_config(hf_config(reader), reader.directory)


def _source_name(name: str) -> str:
    if name in _TOP:
        return _TOP[name]
    _, _, index, rest = name.split(".", 3)  # model.layers.N.<module>.<kind>
    module, kind = rest.rsplit(".", 1)
    return f"blk.{index}.{_LAYER[module]}.{kind}"


def plan(config: ModelConfig, arch: str = "llama") -> dict[str, TensorRef]:
    """Qwen2 name -> GGUF tensor; a Llama file's q/k/v biases are zeros, a tied model has no ``output``."""
    base = ARCHITECTURES[arch].plan(config)
    return {name: ref if ref.zeros is not None else TensorRef(_source_name(name), ref.rows)
            for name, ref in base.items()}


def ignorable(config: ModelConfig):
    """GGUF tensors that may be present but are unused: none but a tied model's ``output``."""

    def check(name: str) -> bool:
        return config.tie_word_embeddings and name == "output.weight"

    return check
