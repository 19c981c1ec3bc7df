"""Tiny Llama-family sources for the import tests: a Hugging Face directory and a GGUF file.

The tokenizer is a byte-level BPE trained here with the ``tokenizers`` library on Python
standard-library source (SmolLM's layout: ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` at
ids 0-2, so nothing about it looks like Qwen's vocabulary). The model is a random transformers
``LlamaForCausalLM`` (grouped-query attention) over that vocabulary; the GGUF is written with
``gguf.GGUFWriter`` the way llama.cpp's converter writes one (Q and K rows permuted per head).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import gguf
import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB = 384
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                 "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
TEXTS = ["The quick brown fox jumps over the lazy dog.\n\nIsn't it?", "def f(x):\n    return x * 2  # ok",
         "<|im_start|>user\nHello there<|im_end|>\n", "naïve café, 3 apples"]


def tiny_tokenizer() -> Tokenizer:
    """A byte-level BPE of exactly :data:`VOCAB` ids trained on a few standard-library modules."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    corpus = [Path(textwrap.__file__).read_text(), Path(json.__file__).read_text()]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    assert tok.get_vocab_size() == VOCAB
    return tok


def tiny_llama(tied: bool, seed: int = 0, **overrides) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rope_theta=10000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=tied, initializer_range=0.2, bos_token_id=1, eos_token_id=2, **overrides)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # exactly representable in fp16, so an F16 GGUF holds the same function
        for param in model.parameters():
            param.copy_(param.half().float())
    return model


def save_llama_dir(model, tok: Tokenizer, path: Path) -> Path:
    """The model as a released Hugging Face directory with its own tokenizer and chat template."""
    model.save_pretrained(path)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIALS[1], eos_token=SPECIALS[2],
                                                unk_token=SPECIALS[0], pad_token=SPECIALS[0])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return path


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's ``convert_hf_to_gguf`` permutation of Q/K rows (for its interleaved RoPE)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_gguf(model, tok: Tokenizer, path: Path, quant: dict[str, gguf.GGMLQuantizationType | type] | None = None,
               pre: str = "default", arch: str = "llama") -> Path:
    """``model`` as llama.cpp writes a Llama (or Qwen2: biases, no Q/K permutation) GGUF: F32 norms
    and biases, F16 matrices unless ``quant`` names a quantisation type (or a numpy type) for a tensor."""
    cfg, quant = model.config, quant or {}
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    data = json.loads(tok.to_str())
    vocab = sorted(data["model"]["vocab"].items(), key=lambda item: item[1])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]])
    writer.add_token_types([3 if token in SPECIALS else 1 for token, _ in vocab])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    names = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
    layer = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        stem, kind = name.rsplit(".", 1)
        if stem.startswith("model.layers."):
            _, _, index, module = stem.split(".", 3)
            out = f"blk.{index}.{layer[module]}.{kind}"
        else:
            out = f"{names[stem]}.{kind}"
        array = tensor.numpy()
        if arch == "llama" and out.endswith("attn_q.weight"):
            array = _permute(array, cfg.num_attention_heads)
        elif arch == "llama" and out.endswith("attn_k.weight"):
            array = _permute(array, cfg.num_key_value_heads)
        if isinstance(quant.get(out), type):  # a plain numpy type (F64 …)
            writer.add_tensor(out, array.astype(quant[out]))
        elif out in quant:
            writer.add_tensor(out, gguf.quants.quantize(array, quant[out]), raw_dtype=quant[out])
        else:
            writer.add_tensor(out, array.astype(np.float32 if array.ndim == 1 else np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def our_logits(directory: Path, ids: torch.Tensor) -> torch.Tensor:
    from qwen_cli.checkpoint import load_model

    with torch.no_grad():
        return load_model(directory).float()(ids)


def their_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits.float()
