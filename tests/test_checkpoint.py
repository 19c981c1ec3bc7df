"""Checkpoint directories: exact round trip, HF layout, sharding, and clear errors on damage."""

import json
import os

import pytest
import torch

from qwen_cli.checkpoint import load_model, save_model
from qwen_cli.checkpoint.files import CHECKSUM_FILE, INDEX_FILE, WEIGHTS_FILE
from qwen_cli.errors import UserError
from qwen_cli.fsutil import atomic_dir
from qwen_cli.model import ModelConfig, QwenModel


@pytest.fixture()
def tiny_model():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=256, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                         intermediate_size=96)
    return QwenModel(config).eval()


def test_round_trip_is_bit_exact(tiny_model, tmp_path):
    save_model(tmp_path / "ckpt", tiny_model)
    loaded = load_model(tmp_path / "ckpt")
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    x = torch.randint(0, 256, (2, 9))
    assert torch.equal(tiny_model(x), loaded(x))


def test_config_is_hf_qwen2(tiny_model, tmp_path):
    save_model(tmp_path / "ckpt", tiny_model)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["num_key_value_heads"] == 2
    assert config["tie_word_embeddings"] is False


def test_sharded_weights_load(tiny_model, tmp_path):
    save_model(tmp_path / "ckpt", tiny_model, shard_bytes=40_000)
    index = json.loads((tmp_path / "ckpt" / INDEX_FILE).read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (tmp_path / "ckpt" / WEIGHTS_FILE).exists()
    loaded = load_model(tmp_path / "ckpt")
    assert torch.equal(loaded.lm_head.weight, tiny_model.lm_head.weight)


def test_altered_weights_are_refused(tiny_model, tmp_path):
    save_model(tmp_path / "ckpt", tiny_model)
    weights = tmp_path / "ckpt" / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum mismatch"):
        load_model(tmp_path / "ckpt")


def test_truncated_weights_give_clear_error(tiny_model, tmp_path):
    save_model(tmp_path / "ckpt", tiny_model)
    (tmp_path / "ckpt" / CHECKSUM_FILE).unlink()  # as a checkpoint from another tool would be
    weights = tmp_path / "ckpt" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(UserError, match="unreadable safetensors"):
        load_model(tmp_path / "ckpt")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(UserError, match="not a checkpoint directory"):
        load_model(tmp_path)


def test_failed_write_leaves_previous_version(tiny_model, tmp_path):
    target = tmp_path / "ckpt"
    save_model(target, tiny_model)
    before = sorted(p.name for p in target.iterdir())
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "partial").write_text("half")
        raise RuntimeError("killed mid-save")
    assert sorted(p.name for p in target.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp directory left behind
    load_model(target)


def test_outputs_are_readable_by_others(tiny_model, tmp_path):
    umask = os.umask(0o022)
    try:
        save_model(tmp_path / "ckpt", tiny_model)
    finally:
        os.umask(umask)
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o755  # mkdtemp alone would give 0o700


def test_every_checkpoint_file_gets_the_same_permissions(tmp_path):
    """safetensors creates its file 0600; a checkpoint must be as readable as its other files."""
    model = QwenModel(ModelConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64))
    out = save_model(tmp_path / "ckpt", model)
    modes = {path.name: path.stat().st_mode & 0o777 for path in out.iterdir()}
    assert len(set(modes.values())) == 1, modes


def test_bf16_load_keeps_rope_frequencies_fp32(tiny_model, tmp_path):
    """DESIGN: RoPE's inverse frequencies are fp32; a bf16 load must not round them to bf16."""
    from qwen_cli.model.rope import rotary_inv_freq

    save_model(tmp_path / "ckpt", tiny_model)
    model = load_model(tmp_path / "ckpt", dtype=torch.bfloat16)
    assert model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.inv_freq.dtype == torch.float32
    assert torch.equal(model.inv_freq, rotary_inv_freq(model.config.head_dim, model.config.rope_theta))
