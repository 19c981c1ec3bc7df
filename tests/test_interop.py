"""Qwen2 interop against transformers (a reference nobody here wrote): import, export, round trip, errors.

Models are tiny (hidden 32, 2 layers, grouped-query attention) but use the real Qwen vocabulary,
so the tokenizer files are the ones a released Qwen2 checkpoint carries.
"""

import json
import shutil

import pytest
import torch
import transformers  # a dev dependency: missing, these tests fail rather than skip
from safetensors.torch import load_file, save_file

from qwen_cli.checkpoint import load_model, save_model
from qwen_cli.checkpoint.convert import convert
from qwen_cli.checkpoint.files import INDEX_FILE, WEIGHTS_FILE, read_hf_tensors
from qwen_cli.data.chat_template import ChatTemplate
from qwen_cli.errors import UserError
from qwen_cli.inference.generate import generate
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.tokenizer import load_tokenizer

TOL = 1e-5
transformers.utils.logging.disable_progress_bar()
HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json")
SAMPLES = {
    "english": "The quick brown fox jumps over the lazy dog. Isn't it?",
    "chinese": "通义千问是阿里巴巴开发的大语言模型，支持中文和英文。",
    "code": "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\tprint(x[0]) # ok",
    "digits": "Pi is 3.14159265358979 and 2024-05-01, 1234567890 apples.",
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("qwen")


@pytest.fixture(scope="module")
def hf_tokenizer_dir(tokenizer, tmp_path_factory):
    """Only the Hugging Face tokenizer files, as a released Qwen2 directory has them."""
    full = tmp_path_factory.mktemp("tok")
    tokenizer.save(full)
    return full


def released_qwen2(path, tokenizer_dir, tied: bool, shard: str | None = None):
    """A random transformers Qwen2ForCausalLM saved like a released checkpoint (GQA: 4 heads, 2 kv heads)."""
    torch.manual_seed(1 if tied else 2)
    config = transformers.Qwen2Config(
        vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rope_theta=10000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=tied, initializer_range=0.2,
    )
    model = transformers.Qwen2ForCausalLM(config).eval()
    model.save_pretrained(path, **({"max_shard_size": shard} if shard else {}))
    for name in HF_TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / name, path / name)
    return model


def padded_batch(tokenizer):
    """Left-padded ids, mask and positions for three prompts of different lengths."""
    prompts = [tokenizer.encode(SAMPLES[k]) for k in ("english", "chinese", "digits")]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return prompts, ids, mask, positions


def max_diff_on_real_tokens(ours, theirs, mask):
    real = mask.bool()
    return (ours[real] - theirs[real]).abs().max().item()


@pytest.mark.parametrize("tied", [False, True], ids=["untied-sharded", "tied"])
def test_import_qwen2_matches_transformers(tied, tokenizer, hf_tokenizer_dir, tmp_path, run_qwen):
    src, dst = tmp_path / "released", tmp_path / "ours"
    reference = released_qwen2(src, hf_tokenizer_dir, tied, shard=None if tied else "5MB")
    assert tied or (src / INDEX_FILE).exists()
    code, out, err = run_qwen("convert", src, dst, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["source_format"] == "qwen2" and result["dtype"] == "float32"

    model = load_model(dst)
    assert model.config.num_kv_heads == 2 and model.config.tie_word_embeddings is tied
    assert load_tokenizer(dst).hash == tokenizer.hash  # tokenizer.json read back into the official vocabulary
    prompts, ids, mask, positions = padded_batch(tokenizer)
    with torch.no_grad():
        ours = model(ids, position_ids=positions, attention_mask=mask)
        theirs = reference(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    diff = max_diff_on_real_tokens(ours, theirs, mask)
    print(f"import qwen2 (tied={tied}) max |dlogits| = {diff:.3e}")
    assert diff <= TOL

    new = generate(model, prompts, max_new_tokens=8)
    with torch.no_grad():
        hf_out = reference.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                    eos_token_id=None, pad_token_id=tokenizer.eot_id)
    assert new == hf_out[:, ids.shape[1]:].tolist()


@pytest.fixture(scope="module")
def our_checkpoint(tokenizer, tmp_path_factory):
    torch.manual_seed(3)
    config = ModelConfig(vocab_size=151936, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                         intermediate_size=64, max_position_embeddings=128, init_std=0.2)
    model = QwenModel(config).eval()
    path = tmp_path_factory.mktemp("ckpt") / "base"
    save_model(path, model, tokenizer, recipe_text="[model]\nhidden_size = 32\n")
    return path, model


@pytest.fixture(scope="module")
def exported(our_checkpoint, tmp_path_factory):
    dst = tmp_path_factory.mktemp("export") / "hf"
    convert(our_checkpoint[0], dst, target="hf", shard_bytes=8 * 10**6)
    return dst


def test_export_loads_in_transformers_with_same_logits(our_checkpoint, exported, tokenizer):
    assert (exported / INDEX_FILE).exists() and not (exported / WEIGHTS_FILE).exists()
    generation = json.loads((exported / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tokenizer.im_end_id, tokenizer.eot_id]
    reference = transformers.AutoModelForCausalLM.from_pretrained(exported, local_files_only=True).eval()
    assert type(reference).__name__ == "Qwen2ForCausalLM"
    assert reference.generation_config.eos_token_id == [tokenizer.im_end_id, tokenizer.eot_id]
    _, ids, mask, positions = padded_batch(tokenizer)
    with torch.no_grad():
        ours = our_checkpoint[1](ids, position_ids=positions, attention_mask=mask)
        theirs = reference(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    diff = max_diff_on_real_tokens(ours, theirs, mask)
    print(f"export hf max |dlogits| = {diff:.3e}")
    assert diff <= TOL


def test_exported_tokenizer_and_chat_template(exported, tokenizer):
    hf_tok = transformers.AutoTokenizer.from_pretrained(exported, local_files_only=True)
    for kind, text in SAMPLES.items():
        assert hf_tok.encode(text, add_special_tokens=False) == tokenizer.encode(text), kind
        assert hf_tok.decode(tokenizer.encode(text)) == text, kind
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好, 2+2?"},
                {"role": "assistant", "content": "4"}, {"role": "user", "content": "def f(): pass"}]
    chatml = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n你好, 2+2?<|im_end|>\n"
              "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\ndef f(): pass<|im_end|>\n"
              "<|im_start|>assistant\n")
    rendered = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == chatml
    ours = ChatTemplate(tokenizer)
    for conversation in (messages, messages[1:]):  # without a system turn both use the default one
        ids = hf_tok.apply_chat_template(conversation, tokenize=True, add_generation_prompt=True, return_dict=False)
        assert list(ids) == ours.prompt(conversation)


def test_round_trip_native_hf_native_is_bit_identical(our_checkpoint, exported, tmp_path):
    back = tmp_path / "back"
    result = convert(exported, back, target="native")
    assert result.source_format == "native"
    original, returned = read_hf_tensors(our_checkpoint[0]), read_hf_tensors(back)
    assert original.keys() == returned.keys()
    for name, tensor in original.items():
        assert tensor.dtype == returned[name].dtype and torch.equal(tensor, returned[name]), name
    assert json.loads((back / "config.json").read_text()) == json.loads((our_checkpoint[0] / "config.json").read_text())
    assert (back / "recipe.toml").read_text() == (our_checkpoint[0] / "recipe.toml").read_text()
    assert load_tokenizer(back).hash == load_tokenizer(our_checkpoint[0]).hash


@pytest.mark.parametrize("dtype,torch_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_dtype_conversion(dtype, torch_dtype, our_checkpoint, tmp_path):
    dst = tmp_path / dtype
    convert(our_checkpoint[0], dst, dtype=dtype)
    assert json.loads((dst / "config.json").read_text())["torch_dtype"] == str(torch_dtype).removeprefix("torch.")
    original = read_hf_tensors(our_checkpoint[0])
    for name, tensor in read_hf_tensors(dst).items():
        assert tensor.dtype == torch_dtype and torch.equal(tensor, original[name].to(torch_dtype)), name
    model = load_model(dst)
    assert next(model.parameters()).dtype == torch_dtype


def _missing_shard(src):
    index = json.loads((src / INDEX_FILE).read_text())
    victim = sorted(set(index["weight_map"].values()))[1]
    (src / victim).unlink()
    return victim


def _shape_mismatch(src):
    index = json.loads((src / INDEX_FILE).read_text())
    name = "model.layers.1.self_attn.k_proj.weight"
    path = src / index["weight_map"][name]
    tensors = load_file(path)
    tensors[name] = tensors[name][:-1].contiguous()
    save_file(tensors, path, metadata={"format": "pt"})
    return name


def _missing_tensor(src):
    index = json.loads((src / INDEX_FILE).read_text())
    name = "model.layers.0.mlp.up_proj.weight"
    path = src / index["weight_map"][name]
    tensors = load_file(path)
    del tensors[name]
    save_file(tensors, path, metadata={"format": "pt"})
    return name


def _unknown_model_type(src):
    config = json.loads((src / "config.json").read_text())
    config["model_type"] = "gpt_neox"
    (src / "config.json").write_text(json.dumps(config))
    return "gpt_neox"


@pytest.mark.parametrize("damage", [_missing_shard, _shape_mismatch, _missing_tensor, _unknown_model_type])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(damage, hf_tokenizer_dir, tmp_path, run_qwen):
    src, dst = tmp_path / "released", tmp_path / "out" / "ours"
    released_qwen2(src, hf_tokenizer_dir, tied=False, shard="5MB")
    culprit = damage(src)
    code, _, err = run_qwen("convert", src, dst)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and culprit in err, err
    assert not dst.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_existing_output_needs_overwrite_and_pickles_are_refused(our_checkpoint, tmp_path):
    dst = tmp_path / "taken"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists"):
        convert(our_checkpoint[0], dst)
    assert (dst / "keep.txt").read_text() == "mine"
    src = tmp_path / "pickled"
    src.mkdir()
    shutil.copyfile(our_checkpoint[0] / "config.json", src / "config.json")
    (src / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(UserError, match="pytorch_model.bin: PyTorch pickle weights are not read"):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
