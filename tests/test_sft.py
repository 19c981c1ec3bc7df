"""SFT: a tiny model overfits real chat pairs (greedy replies reproduce the answers), full and LoRA;
LoRA merging is exact; recipe errors are one line; resume position of the chat batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qwen_cli.checkpoint import load_model, save_model
from qwen_cli.data.chat_template import ChatTemplate, Sample
from qwen_cli.data.shards import BatchLayout
from qwen_cli.errors import UserError
from qwen_cli.inference.generate import generate
from qwen_cli.model import ModelConfig, QwenModel, lora
from qwen_cli.recipe import load_recipe
from qwen_cli.stages.sft import SECTIONS, ChatBatches, SFTStage
from qwen_cli.tokenizer import Tokenizer, load_tokenizer
from qwen_cli.train.trainer import run_stage

FIXTURE = Path(__file__).parent / "fixtures" / "chatterbot_en.jsonl"


def byte_tokenizer() -> Tokenizer:
    """A real Tokenizer whose ranks are the 256 single bytes (464 ids with the Qwen specials)."""
    return Tokenizer({bytes([i]): i for i in range(256)}, name="bytes")


def pretrained(tmp_path: Path) -> Path:
    """A random tiny 'pretrained' checkpoint with the byte tokenizer."""
    tok = byte_tokenizer()
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tok.padded_vocab_size, hidden_size=64, num_layers=2, num_heads=4,
                         intermediate_size=176, max_position_embeddings=256)
    return save_model(tmp_path / "base", QwenModel(config), tok)


def chat_pairs(n: int) -> list[dict]:
    """The first ``n`` single-exchange fixture conversations with a prompt that has one answer."""
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    prompts = [r["messages"][0]["content"] for r in rows]
    unique = [r for r, p in zip(rows, prompts, strict=True)
              if prompts.count(p) == 1 and len(r["messages"]) == 2 and len(r["messages"][1]["content"]) < 40]
    return unique[:n]


def write_recipe(tmp_path: Path, base: Path, data: Path, extra: str = "") -> Path:
    text = f"""
[init]
checkpoint = "{base}"
[data]
train = "{data}"
seq_len = 128
[optim]
lr = 3.0e-3
weight_decay = 0.0
[schedule]
warmup_steps = 10
decay = "constant"
[train]
batch_tokens = 512
micro_batch_size = 4
steps = 160
dtype = "float32"
device = "cpu"
peak_flops = 1.0e9
[logging]
progress = "none"
log_every = 50
[sample]
max_new_tokens = 0
{extra}
"""
    path = tmp_path / "sft.toml"
    path.write_text(text)
    return path


def replies(final: Path, pairs: list[dict]) -> list[str]:
    model = load_model(final)
    tok = load_tokenizer(final)
    template = ChatTemplate(tok)
    prompts = [template.prompt(p["messages"][:1]) for p in pairs]
    out = generate(model, prompts, 48, stop_ids=template.stop_ids)
    return [tok.decode(o) for o in out]


def sft_run(tmp_path: Path, pairs: list[dict], extra: str = "", **train):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    base = pretrained(tmp_path)
    recipe = load_recipe(write_recipe(tmp_path, base, data, extra), sections=SECTIONS)
    for key, value in train.items():
        setattr(recipe.train, key, value)
    return base, run_stage(SFTStage, recipe, tmp_path / "run")


@pytest.mark.slow
def test_overfit_reproduces_trained_answers(tmp_path):
    pairs = chat_pairs(6)
    _, result = sft_run(tmp_path, pairs)
    assert result.exit_code == 0 and result.metrics["loss"] < 0.05
    assert replies(result.final_dir, pairs) == [p["messages"][1]["content"] for p in pairs]


def test_lora_run_trains_only_target_layers_and_saves_plain_weights(tmp_path, capsys):
    base, result = sft_run(tmp_path, chat_pairs(6), "[lora]\nrank = 8\nalpha = 16.0\ntargets = [\"qkv_proj\"]\n",
                           steps=12)
    assert result.exit_code == 0
    assert "M trainable)" in capsys.readouterr().err  # the count says the adapters are what trains
    before, after = load_model(base).state_dict(), load_model(result.final_dir).state_dict()
    assert set(before) == set(after)  # plain Qwen names: the adapters are merged
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"layers.{i}.attn.qkv_proj.weight" for i in range(2)}
    assert (result.final_dir / "lora_adapter.safetensors").is_file()


def test_chat_checkpoints_tell_transformers_to_stop_at_im_end(tmp_path):
    transformers = pytest.importorskip("transformers")
    _, result = sft_run(tmp_path, chat_pairs(2), steps=1)
    tok = load_tokenizer(result.final_dir)
    generation = transformers.GenerationConfig.from_pretrained(result.final_dir)
    assert generation.eos_token_id == [tok.im_end_id, tok.eot_id]


def test_sequences_longer_than_the_model_are_refused(tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in chat_pairs(2)))
    recipe = load_recipe(write_recipe(tmp_path, pretrained(tmp_path), data), ["data.seq_len=4096"], sections=SECTIONS)
    with pytest.raises(UserError, match="exceeds the model's max_position_embeddings"):
        SFTStage(recipe).build_model()


def test_lora_merge_equals_wrapped_model():
    torch.manual_seed(0)
    model = QwenModel(ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64))
    plain = QwenModel(model.config)
    assert lora.apply_lora(model, rank=4, alpha=8.0, targets=["qkv_proj", "down_proj"]) == 4
    for name, p in model.named_parameters():
        if name.endswith("lora_b"):
            torch.nn.init.normal_(p)  # make the update non-zero
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_a", "lora_b")) for n in trainable)
    state = model.state_dict()
    plain.load_state_dict(lora.merge_state(state, 2.0))
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(plain(ids), model(ids), atol=1e-4, rtol=1e-4)
    rebuilt = lora.unmerged_state({k: v for k, v in plain.state_dict().items()}, lora.adapter_state(state))
    assert set(rebuilt) == set(state)
    with pytest.raises(ValueError, match="unknown LoRA target"):
        lora.apply_lora(plain, 4, 8.0, targets=["wq"])


def test_chat_batches_resume_at_the_same_rows():
    samples = [Sample(list(range(1, n + 1)), [True] * n) for n in (5, 9, 3, 7, 2, 8, 6, 1, 4, 10, 3)]
    layout = BatchLayout(rank=0, world_size=1, micro_batch_size=2, accum_steps=2)
    first = ChatBatches(samples, layout, 12, "pack", seed=3)
    seen = [next(first)["input_ids"] for _ in range(12)]  # several epochs
    second = ChatBatches(samples, layout, 12, "pack", seed=3)
    for _ in range(6):
        next(second)
    state = second.state_dict()
    resumed = ChatBatches(samples, layout, 12, "pack", seed=0)
    resumed.load_state_dict(state)
    for expected in seen[6:]:
        assert torch.equal(next(resumed)["input_ids"], expected)


def test_recipe_errors_are_one_line(tmp_path):
    base = pretrained(tmp_path)
    recipe = write_recipe(tmp_path, base, tmp_path / "missing.jsonl")
    proc = subprocess.run([sys.executable, "-m", "qwen_cli.cli", "sft", str(recipe)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.jsonl'}: cannot read chat data "
                                                "(No such file or directory)"]
    bad = tmp_path / "bad.toml"
    bad.write_text(recipe.read_text() + "[model]\nhidden_size = 32\n")
    with pytest.raises(UserError, match="model.hidden_size cannot be set for SFT"):
        SFTStage(load_recipe(bad, sections=SECTIONS))
