"""Values that are refused up front (issue 10, item 4): one ``error:`` line naming the file and key, exit 2,
nothing created on disk and no tensor allocated, instead of a traceback or a half-made run folder.

Recipes are checked when read (types, ranges, the model shape), checkpoint ``config.json`` files when
read by ``qwen chat`` / ``qwen convert`` (types, ranges, a size bound computed from the config),
and command options before any work (``qwen eval --device``, ``qwen tokenize encode --workers``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from train_fixtures import TINY_OVERRIDES, TINY_RECIPE

from qwen_cli.checkpoint import save_model
from qwen_cli.checkpoint.files import CONFIG_FILE, write_checksums
from qwen_cli.data import encode
from qwen_cli.errors import UserError
from qwen_cli.interop import qwen1
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.model.config import MAX_PARAMETERS, ConfigError
from qwen_cli.tokenizer import Tokenizer, load_tokenizer

TINY_MODEL = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=64)

# (--set KEY=VALUE, the key the error must name): at least one bad value for every numeric recipe key
BAD_RECIPE_VALUES = [
    ("data.seq_len=0", "'data.seq_len' must be >= 1, got 0"),
    ("data.seq_len=-4", "'data.seq_len' must be >= 1, got -4"),
    ("train.batch_tokens=0", "'train.batch_tokens' must be >= 1, got 0"),
    ("train.micro_batch_size=0", "'train.micro_batch_size' must be >= 1, got 0"),
    ("train.steps=-1", "'train.steps'"),
    ("train.tokens=-1", "'train.tokens'"),
    ("train.seed=-1", "'train.seed'"),
    ("train.loss_chunk_tokens=-1", "'train.loss_chunk_tokens'"),
    ("train.val_every=-1", "'train.val_every'"),
    ("train.val_batches=-1", "'train.val_batches'"),
    ("train.peak_flops=-1", "'train.peak_flops'"),
    ("optim.lr=-1", "'optim.lr' must be > 0, got -1.0"),
    ("optim.lr=nan", "'optim.lr' must be finite and > 0, got nan"),
    ("optim.lr=inf", "'optim.lr' must be finite and > 0, got inf"),
    ("optim.lr=0", "'optim.lr'"),
    ("optim.betas=[0.9, 1.0]", "'optim.betas' entries must be in [0, 1), got 1.0"),
    ("optim.betas=[0.9]", "'optim.betas' must have two entries"),
    ("optim.eps=0", "'optim.eps'"),
    ("optim.weight_decay=-0.1", "'optim.weight_decay'"),
    ("optim.grad_clip=-1", "'optim.grad_clip'"),
    ("schedule.warmup_steps=-1", "'schedule.warmup_steps'"),
    ("schedule.warmup_ratio=1.0", "'schedule.warmup_ratio' must be in [0, 1), got 1.0"),
    ("schedule.min_lr_ratio=1.5", "'schedule.min_lr_ratio' must be in [0, 1], got 1.5"),
    ("checkpoint.every=-1", "'checkpoint.every'"),
    ("checkpoint.keep_last=-1", "'checkpoint.keep_last'"),
    ("logging.log_every=0", "'logging.log_every'"),
    ("model.hidden_size=0", "'model.hidden_size' must be >= 1, got 0"),
    ("model.num_layers=0", "'model.num_layers' must be >= 1, got 0"),
    ("model.num_heads=0", "'model.num_heads'"),
    ("model.num_heads=3", "'model.num_heads' must divide hidden_size 32, got 3"),
    ("model.num_kv_heads=3", "'model.num_kv_heads'"),
    ("model.intermediate_size=0", "'model.intermediate_size'"),
    ("model.max_position_embeddings=0", "'model.max_position_embeddings'"),
    ("model.vocab_size=0", "'model.vocab_size'"),
    ("model.rope_theta=0", "'model.rope_theta'"),
    ("model.rms_norm_eps=-1e-6", "'model.rms_norm_eps'"),
    ("model.dropout=2.0", "'model.dropout' must be in [0, 1), got 2.0"),
    ("model.init_std=-0.02", "'model.init_std'"),
    ("model.layer_windows=[16, -1]", "'model.layer_windows' entries must be integers >= 0"),
    ("model.layer_windows=[16]", "'model.layer_windows' must have one entry per layer (2), got 1"),
    ("model.train_length=-1", "'model.train_length'"),
    ("model.preset=qwen-9b", "'model.preset'"),
    (f"model.vocab_size={MAX_PARAMETERS // 32}", "'model.vocab_size' must keep the model under 1e+12 parameters"),
    ("model.vocab_size=100", "model.vocab_size = 100 is smaller than the tokenizer's"),  # shard ids would not fit
]


@pytest.mark.parametrize("override, message", BAD_RECIPE_VALUES, ids=[o for o, _ in BAD_RECIPE_VALUES])
def test_bad_recipe_values_are_refused_before_the_run_dir_exists(run_qwen, shards, tmp_path, override, message):
    out = tmp_path / "run"
    code, _, err = run_qwen("pretrain", TINY_RECIPE, *(f"--set={o}" for o in TINY_OVERRIDES),
                            f"--set=data.shards={shards}", f"--set={override}", "--out", out)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not out.exists()


def test_model_config_counts_parameters_without_building_the_model():
    for extra in ({}, {"tie_word_embeddings": True}, {"num_kv_heads": 1}):
        config = ModelConfig(vocab_size=300, **{**TINY_MODEL, **extra})
        assert config.num_parameters == QwenModel(config).num_parameters()


@pytest.mark.parametrize("change, message", [
    ({"hidden_size": 0}, "hidden_size must be >= 1, got 0"),
    ({"num_heads": 0}, "num_heads must be >= 1, got 0"),
    ({"vocab_size": "abc"}, "vocab_size must be an integer, got 'abc'"),
    ({"hidden_size": 2.0**40}, "hidden_size must be an integer"),
    ({"num_layers": True}, "num_layers must be an integer, got True"),
    ({"dropout": float("nan")}, "dropout must be finite and in [0, 1), got nan"),
    ({"rope_theta": 10**400}, "rope_theta must be finite and > 0"),
    ({"hidden_size": 2**64}, "hidden_size must keep the model under 1e+12 parameters"),
    ({"attention_backend": "tpu"}, "attention_backend must be one of"),
])
def test_model_config_refuses_wrong_types_and_values(change, message):
    with pytest.raises(ConfigError) as info:
        ModelConfig(**{**TINY_MODEL, **change})
    assert str(info.value).startswith(message)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    tokenizer = Tokenizer({bytes([i]): i for i in range(256)}, name="bytes")
    return save_model(root / "ckpt", QwenModel(ModelConfig(vocab_size=384, **TINY_MODEL)), tokenizer)


def edited_checkpoint(checkpoint: Path, root: Path, change: dict) -> Path:
    """A copy of ``checkpoint`` whose config.json has ``change`` applied (None deletes), checksums redone."""
    path = root / "bad"
    shutil.copytree(checkpoint, path)
    config = json.loads((path / CONFIG_FILE).read_text())
    for key, value in change.items():
        config.pop(key) if value is None else config.__setitem__(key, value)
    (path / CONFIG_FILE).write_text(json.dumps(config))
    write_checksums(path)
    return path


BAD_CHECKPOINT_CONFIGS = [
    ({"hidden_size": 1e9}, "'hidden_size' must be an integer, got 1000000000.0"),
    ({"hidden_size": 10**9}, "'hidden_size' must keep the model under 1e+12 parameters"),
    ({"num_hidden_layers": -1}, "'num_hidden_layers' must be >= 1, got -1"),
    ({"num_attention_heads": 0}, "'num_attention_heads' must be >= 1, got 0"),
    ({"vocab_size": "abc"}, "'vocab_size' must be an integer, got 'abc'"),
    ({"vocab_size": None}, "'vocab_size' is missing"),
    ({"num_key_value_heads": 3}, "'num_key_value_heads' must divide the 2 attention heads, got 3"),
    ({"qwen_cli": {"dropout": 2}}, "'qwen_cli.dropout' must be in [0, 1), got 2.0"),
    ({"qwen_cli": None, "use_sliding_window": True, "sliding_window": -8}, "'sliding_window' entries must be integers >= 0"),
]


@pytest.mark.parametrize("command", ["chat", "convert"])
@pytest.mark.parametrize("change, message", BAD_CHECKPOINT_CONFIGS, ids=[str(c) for c, _ in BAD_CHECKPOINT_CONFIGS])
def test_bad_checkpoint_configs_are_refused_naming_the_key(run_qwen, checkpoint, tmp_path, command, change, message):
    bad = edited_checkpoint(checkpoint, tmp_path, change)
    out = tmp_path / "converted"
    args = ("chat", bad, "--max-new-tokens", "1") if command == "chat" else ("convert", bad, out)
    code, _, err = run_qwen(*args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {bad / CONFIG_FILE}: {message}"), err
    assert not out.exists()


@pytest.mark.parametrize("change, key", [
    ({"num_attention_heads": 0}, "'num_attention_heads' must be >= 1"),
    ({"vocab_size": "abc"}, "'vocab_size' must be an integer"),
    ({"hidden_size": 10**9}, "'hidden_size' must keep the model under"),
    ({"seq_length": -1}, "'seq_length' must be >= 1"),
    ({"rotary_emb_base": "x"}, "'rotary_emb_base' must be a number"),
])
def test_bad_qwen1_configs_name_the_key(tmp_path, change, key):
    hf = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 256,
          "vocab_size": 512, "seq_length": 2048}
    with pytest.raises(UserError) as info:
        qwen1.model_config({**hf, **change}, tmp_path / CONFIG_FILE)
    assert str(info.value).startswith(f"{tmp_path / CONFIG_FILE}: {key}")


@pytest.mark.parametrize("device", ["tpu", "cuda:99", "cuda:x"])
def test_eval_refuses_an_unusable_device(run_qwen, checkpoint, device):
    code, _, err = run_qwen("eval", checkpoint, "--tasks", "gsm8k", "--limit", "1", "--device", device)
    assert code == 2 and err.startswith(f"error: --device {device}: ") and len(err.strip().splitlines()) == 1, err


def corpus(root: Path) -> Path:
    path = root / "c.txt"
    path.write_text("one\ntwo\nthree\n")
    return path


def byte_tokenizer(root: Path) -> Path:
    Tokenizer({bytes([i]): i for i in range(256)}, name="bytes").save(root / "tokenizer", hf=False)
    return root / "tokenizer"


def test_encode_caps_workers_to_the_cores_and_says_so(run_qwen, monkeypatch, tmp_path):
    used = []
    encode_all = encode._encode_all

    def spy(batches, tok, tokenizer_dir, workers, flat_path):
        used.append(workers)
        return encode_all(batches, tok, tokenizer_dir, 1, flat_path)  # no processes spawned by the test

    monkeypatch.setattr(encode, "_encode_all", spy)
    code, _, err = run_qwen("tokenize", "encode", "--input", corpus(tmp_path), "--out", tmp_path / "shards",
                            "--tokenizer", byte_tokenizer(tmp_path), "--text-unit", "line", "--workers", "100000")
    assert code == 0 and used == [encode.available_cores()]
    assert f"--workers 100000: using {encode.available_cores()}" in err


def test_encode_refuses_a_negative_seed_before_writing(tmp_path):
    with pytest.raises(UserError, match="--seed must be >= 0"):
        encode.encode_corpus([str(corpus(tmp_path))], str(byte_tokenizer(tmp_path)), tmp_path / "shards",
                             text_unit="line", seed=-1, workers=1)
    assert not (tmp_path / "shards").exists()


def test_shards_of_another_tokenizer_than_the_init_checkpoints_are_refused(run_qwen, shards, tmp_path, one_thread):
    shifted = Tokenizer({bytes([i]): (i + 1) % 256 for i in range(256)}, name="shifted")
    config = ModelConfig(vocab_size=load_tokenizer(shards / "tokenizer").padded_vocab_size, **TINY_MODEL)
    torch.manual_seed(0)
    init = save_model(tmp_path / "init", QwenModel(config), shifted)
    out = tmp_path / "run"
    code, _, err = run_qwen("pretrain", TINY_RECIPE, *(f"--set={o}" for o in TINY_OVERRIDES), "--set=train.steps=1",
                            f"--set=data.shards={shards}", f"--set=init.checkpoint={init}", "--out", out)
    assert code == 2 and "tokenizer" in err
    assert not out.exists()
