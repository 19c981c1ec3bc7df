"""`qwen convert model.gguf OUT` against two references nobody here wrote: the transformers Llama the
GGUF was written from, and transformers' own GGUF loader (model and tokenizer).

The GGUF is written with ``gguf.GGUFWriter`` as llama.cpp's converter writes one (Q/K rows permuted
per head, F32 norms, F16 or quantised matrices), so un-permuting, dequantising, name mapping, the
config from metadata and the tokenizer rebuilt from metadata are each checked.
"""

import json

import gguf
import numpy as np
import pytest
import torch
import transformers
from llama_fixtures import (
    CHAT_TEMPLATE,
    TEXTS,
    VOCAB,
    our_logits,
    their_logits,
    tiny_llama,
    tiny_tokenizer,
    write_gguf,
)
from tokenizers import Tokenizer

from qwen_cli.checkpoint.convert import convert
from qwen_cli.errors import UserError
from qwen_cli.interop.gguf_file import unpermute

TOL = 1e-5
Q8 = gguf.GGMLQuantizationType.Q8_0
transformers.utils.logging.disable_progress_bar()


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def ids_of(tok) -> torch.Tensor:
    rows = [tok.encode(text).ids for text in TEXTS]
    width = max(map(len, rows))
    return torch.tensor([row + [0] * (width - len(row)) for row in rows])


def test_unpermute_inverts_llama_cpp():
    weight = torch.arange(8 * 3 * 5, dtype=torch.float32).reshape(24, 5)
    from llama_fixtures import _permute

    assert torch.equal(unpermute(torch.from_numpy(_permute(weight.numpy(), 3)), 3), weight)


@pytest.mark.parametrize("tied", [False, True])
def test_f16_gguf_converts_to_the_source_model(tok, tmp_path, run_qwen, tied):
    model = tiny_llama(tied, seed=10 + tied)
    path = write_gguf(model, tok, tmp_path / "tiny.gguf")
    dst = tmp_path / "out"
    code, out, err = run_qwen("convert", path, dst, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["source_format"], result["dtype"]) == ("gguf", "float16")
    ids = ids_of(tok)
    assert (our_logits(dst, ids) - their_logits(model, ids)).abs().max().item() < TOL
    # the tokenizer rebuilt from metadata: the same ids as transformers' own GGUF tokenizer
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    ours = Tokenizer.from_file(str(dst / "tokenizer.json"))
    for text in TEXTS:
        assert ours.encode(text).ids == theirs(text)["input_ids"] == tok.encode(text).ids
    config = json.loads((dst / "tokenizer_config.json").read_text())
    assert (config["chat_template"], config["eos_token"], config["bos_token"]) == (CHAT_TEMPLATE, "<|im_end|>",
                                                                                  "<|im_start|>")
    assert json.loads((dst / "generation_config.json").read_text())["eos_token_id"] == 2
    model_config = json.loads((dst / "config.json").read_text())
    assert (model_config["eos_token_id"], model_config["tie_word_embeddings"]) == (2, tied)


def test_qwen2_architecture_gguf_keeps_its_biases(tok, tmp_path):
    torch.manual_seed(15)
    config = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                      rms_norm_eps=1e-6, tie_word_embeddings=True, initializer_range=0.2)
    model = transformers.Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):  # initialised to zero: make them matter
                param.normal_(0.0, 0.5)
            param.copy_(param.half().float())
    path = write_gguf(model, tok, tmp_path / "qwen2.gguf", arch="qwen2")
    dst = tmp_path / "out"
    convert(path, dst)
    ids = ids_of(tok)
    assert (our_logits(dst, ids) - their_logits(model, ids)).abs().max().item() < TOL


def test_quantised_gguf_matches_transformers_gguf_loader(tok, tmp_path):
    model = tiny_llama(False, seed=12)
    quant = {"token_embd.weight": Q8, "blk.0.attn_q.weight": Q8, "blk.1.attn_k.weight": Q8, "output.weight": Q8}
    path = write_gguf(model, tok, tmp_path / "q8.gguf", quant)
    dst = tmp_path / "out"
    assert convert(path, dst).dtype == "float32"  # dequantised values are exact in fp32
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name,
                                                                  dtype=torch.float32).eval()
    ids = ids_of(tok)
    ours, theirs = our_logits(dst, ids), their_logits(reference, ids)
    assert (ours - theirs).abs().max().item() < TOL
    assert (ours - their_logits(model, ids)).abs().max().item() > 1e-4  # the quantisation is really there


def test_unsupported_tensor_type_is_one_line(tok, tmp_path, run_qwen):
    # F64: a type a GGUF can hold but nothing here dequantises
    path = write_gguf(tiny_llama(False, seed=13), tok, tmp_path / "f64.gguf", {"output_norm.weight": np.float64})
    code, out, err = run_qwen("convert", path, tmp_path / "out")
    assert code == 2 and "output_norm.weight has type F64" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_unknown_split_rule_is_refused(tok, tmp_path):
    path = write_gguf(tiny_llama(False, seed=14), tok, tmp_path / "pre.gguf", pre="made-up")
    with pytest.raises(UserError, match="tokenizer.ggml.pre 'made-up' is not a known split rule"):
        convert(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_gguf_is_one_line(tmp_path, run_qwen):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + bytes(60))  # the magic, then nothing that parses
    code, _, err = run_qwen("convert", path, tmp_path / "out")
    assert code == 2 and f"{path}: not a readable GGUF file" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
