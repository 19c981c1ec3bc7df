"""Activation checkpointing (``train.activation_checkpointing``): which blocks are wrapped, that wrapping
changes no gradient and no parameter or state-dict name, and that a tiny pretrain runs with it."""

from __future__ import annotations

import pytest
import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.train.activation_checkpoint import apply_activation_checkpointing, checkpointed

CONFIG = ModelConfig(vocab_size=97, hidden_size=32, num_layers=4, num_heads=4, num_kv_heads=2,
                     intermediate_size=64, max_position_embeddings=32, dropout=0.1)


def test_which_blocks_are_checkpointed():
    assert [checkpointed("none", i) for i in range(4)] == [False] * 4
    assert [checkpointed("full", i) for i in range(4)] == [True] * 4
    assert [checkpointed("selective", i) for i in range(4)] == [False, True, False, True]
    with pytest.raises(ValueError, match="choose one of none, full, selective"):
        checkpointed("some", 0)


def _grads(mode: str):
    torch.manual_seed(0)
    model = QwenModel(CONFIG).train()  # dropout on: the recomputation must replay the same masks
    names = list(model.state_dict())
    blocks = apply_activation_checkpointing(model, list(model.layers), mode)
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    model(ids).float().square().mean().backward()
    return model, blocks, names, {n.replace("_checkpoint_wrapped_module.", ""): p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("mode", ["full", "selective"])
def test_checkpointing_changes_no_gradient_and_no_name(mode):
    _, _, _, reference = _grads("none")
    model, blocks, names, grads = _grads(mode)
    wrapped = [isinstance(b, CheckpointWrapper) for b in blocks]
    assert wrapped == [checkpointed(mode, i) for i in range(4)]
    assert [isinstance(b, CheckpointWrapper) for b in model.layers] == wrapped  # replaced in the model itself
    assert list(model.state_dict()) == names
    assert grads.keys() == reference.keys()
    for name, grad in reference.items():
        torch.testing.assert_close(grads[name], grad, rtol=0, atol=0, msg=name)


def test_blocks_outside_the_model_are_refused():
    model = QwenModel(CONFIG)
    with pytest.raises(ValueError, match="not submodules"):
        apply_activation_checkpointing(model, [QwenModel(CONFIG).layers[0]], "full")


def test_pretrain_runs_with_full_checkpointing(shards, tmp_path, one_thread, monkeypatch):
    from train_fixtures import tiny_recipe

    from qwen_cli.stages.pretrain import PretrainStage
    from qwen_cli.train import trainer
    from qwen_cli.train.trainer import run_stage

    wrapped: list[list[bool]] = []

    def spy(root, blocks, mode):
        result = apply_activation_checkpointing(root, blocks, mode)
        wrapped.append([isinstance(b, CheckpointWrapper) for b in result])
        return result

    monkeypatch.setattr(trainer, "apply_activation_checkpointing", spy)

    plain = run_stage(PretrainStage, tiny_recipe(shards, "train.steps=2", "checkpoint.every=0"), tmp_path / "a")
    ac = run_stage(PretrainStage, tiny_recipe(shards, "train.steps=2", "checkpoint.every=0",
                                              "train.activation_checkpointing=full"), tmp_path / "b")
    assert wrapped == [[False, False], [True, True]]  # the tiny recipe's 2 blocks, as the recipe key says
    assert ac.step == plain.step == 2 and ac.exit_code == 0
    assert ac.metrics["loss"] == plain.metrics["loss"]  # recomputation is the same arithmetic
    assert (tmp_path / "b" / "final" / "model.safetensors").read_bytes() == \
        (tmp_path / "a" / "final" / "model.safetensors").read_bytes()


def test_fsdp_mixed_precision_policy_follows_the_compute_dtype():
    """bf16 training: FSDP2 gathers bf16 copies and reduces gradients in fp32; fp32 training: no policy."""
    from qwen_cli.train.distributed import mixed_precision

    policy = mixed_precision(torch.bfloat16)
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert mixed_precision(torch.float32) is None
