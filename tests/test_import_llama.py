"""`qwen convert` of Llama-family Hugging Face directories, against transformers' own Llama.

The source is a random ``LlamaForCausalLM`` with its own (non-Qwen) tokenizer; the reference is
that model's logits in transformers, and transformers loading our output as Qwen2.
"""

import json

import pytest
import torch
import transformers
from llama_fixtures import (
    CHAT_TEMPLATE,
    SPECIALS,
    TEXTS,
    VOCAB,
    our_logits,
    save_llama_dir,
    their_logits,
    tiny_llama,
    tiny_tokenizer,
)

from qwen_cli.checkpoint.convert import convert
from qwen_cli.errors import UserError

TOL = 1e-5
transformers.utils.logging.disable_progress_bar()


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def padded_ids(tok) -> torch.Tensor:
    rows = [tok.encode(text).ids for text in TEXTS]
    width = max(map(len, rows))
    return torch.tensor([row + [0] * (width - len(row)) for row in rows])


@pytest.mark.parametrize("tied", [False, True])
def test_llama_directory_imports_exactly(tok, tmp_path, tied):
    model = tiny_llama(tied, seed=int(tied))
    src = save_llama_dir(model, tok, tmp_path / "llama")
    dst = tmp_path / "out"
    result = convert(src, dst)
    assert result.source_format == "llama"
    ids = padded_ids(tok)
    reference = their_logits(model, ids)
    assert (our_logits(dst, ids) - reference).abs().max().item() < TOL
    as_qwen2 = transformers.AutoModelForCausalLM.from_pretrained(dst).eval()  # a valid Qwen2 directory
    assert type(as_qwen2).__name__ == "Qwen2ForCausalLM"
    assert (their_logits(as_qwen2, ids) - reference).abs().max().item() < TOL
    # the source's own tokenizer travels unchanged, chat template included; bos/eos ids are the source's
    assert (dst / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()
    config = json.loads((dst / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["tie_word_embeddings"]) == (1, 2, tied)
    assert not (dst / "qwen_tokenizer.json").exists()  # a foreign vocabulary is not forced into Qwen's layout
    # transformers 5's AutoTokenizer swaps in Qwen2Tokenizer (Qwen's split rule) for any model_type qwen2
    # directory, so the file's own tokenizer is loaded by class, as README "Bring your own model" says
    hf_tok = transformers.PreTrainedTokenizerFast.from_pretrained(dst)
    assert hf_tok.chat_template == CHAT_TEMPLATE  # transformers 5 keeps it in chat_template.jinja
    source_tok = transformers.AutoTokenizer.from_pretrained(src)
    assert [hf_tok(t)["input_ids"] for t in TEXTS] == [source_tok(t)["input_ids"] for t in TEXTS]


def test_mistral_without_window_imports(tok, tmp_path):
    model = tiny_llama(False, seed=3)
    src = save_llama_dir(model, tok, tmp_path / "mistral")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "model_type": "mistral",
                                                 "architectures": ["MistralForCausalLM"], "sliding_window": None}))
    dst = tmp_path / "out"
    assert convert(src, dst).source_format == "llama"
    ids = padded_ids(tok)
    assert (our_logits(dst, ids) - their_logits(model, ids)).abs().max().item() < TOL


@pytest.fixture(scope="module")
def llama_dir(tok, tmp_path_factory):
    return save_llama_dir(tiny_llama(False, seed=4), tok, tmp_path_factory.mktemp("llama"))


@pytest.mark.parametrize("change, key", [
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 64}}, "rope scaling 'llama3'"),
    ({"model_type": "mistral", "sliding_window": 32}, "sliding_window 32"),
    ({"attention_bias": True}, "attention_bias"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
])
def test_what_qwen2_cannot_represent_is_refused(llama_dir, tmp_path, run_qwen, change, key):
    src = tmp_path / "src"
    src.mkdir()
    for path in llama_dir.iterdir():
        (src / path.name).write_bytes(path.read_bytes())
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, **change}))
    code, out, err = run_qwen("convert", src, tmp_path / "out")
    assert code == 2
    assert key in err and str(src / "config.json") in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_tokenizer_larger_than_the_embedding_is_refused(llama_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for path in llama_dir.iterdir():
        (src / path.name).write_bytes(path.read_bytes())
    data = json.loads((src / "tokenizer.json").read_text())
    data["added_tokens"].append({"id": VOCAB, "content": "<extra>", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": True})
    (src / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=f"{VOCAB + 1} tokens, more than the model's {VOCAB}"):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert SPECIALS[0] == data["added_tokens"][0]["content"]
