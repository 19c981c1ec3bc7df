"""Reward-model directories: Hugging Face ``Qwen2ForSequenceClassification`` with one label.

The layout is a Qwen2 model directory (see :mod:`qwen_cli.checkpoint.model_dir`) whose
``config.json`` names ``Qwen2ForSequenceClassification`` with ``num_labels = 1`` and whose weights
are the backbone's ``model.*`` tensors plus ``score.weight`` ``[1, hidden]`` (no ``lm_head``: a
classifier has none). transformers reads the score at the last token that is not
``pad_token_id`` (``<|endoftext|>`` here), which is the ``<|im_end|>`` that ends every scored
reply — the same end token our :meth:`~qwen_cli.model.heads.ScalarHeadModel.pooled` reads, so
``AutoModelForSequenceClassification.from_pretrained(dir)`` gives our rewards.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from qwen_cli.checkpoint.files import (
    CONFIG_FILE,
    RECIPE_FILE,
    read_hf_tensors,
    verify_checksums,
    write_weights,
)
from qwen_cli.checkpoint.model_dir import check_vocabulary, read_config, read_config_json
from qwen_cli.errors import UserError
from qwen_cli.interop.qwen2 import config_to_hf, from_hf_state_dict, to_hf_state_dict
from qwen_cli.model import ModelConfig, QwenModel
from qwen_cli.model.heads import ScalarHeadModel
from qwen_cli.model.rope import rotary_inv_freq

ARCHITECTURE = "Qwen2ForSequenceClassification"
SCORE = "score.weight"


def headless(config: ModelConfig) -> ModelConfig:
    """``config`` as the Qwen2 name mapping should see a model without an output matrix (tied: no
    ``lm_head`` tensor is written or read)."""
    return replace(config, tie_word_embeddings=True)


def is_reward_dir(directory: Path) -> bool:
    """Whether ``directory`` holds a sequence-classification (reward) model."""
    return ARCHITECTURE in read_config_json(Path(directory)).get("architectures", [])


def write_reward_files(directory: Path, state: dict[str, torch.Tensor], config: ModelConfig, tokenizer,
                       recipe_text: str | None = None) -> None:
    """Write config, weights, tokenizer and recipe of a reward model from its state dict (our names:
    ``backbone.*`` and ``score.weight``) into an existing (temporary) directory."""
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    dtype = state[SCORE].dtype
    hf = config_to_hf(config, dtype, tokenizer.special_ids)
    hf.update(architectures=[ARCHITECTURE], num_labels=1, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0},
              pad_token_id=tokenizer.eot_id, problem_type="regression")
    (directory / CONFIG_FILE).write_text(json.dumps(hf, indent=2))
    tensors = to_hf_state_dict(backbone, headless(config))
    tensors[SCORE] = state[SCORE].detach().contiguous()
    write_weights(directory, tensors)
    tokenizer.save(directory)
    if recipe_text is not None:
        (directory / RECIPE_FILE).write_text(recipe_text)


def read_reward_state(directory: Path, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our-named state dict of a reward model directory (``backbone.*`` without ``lm_head``, ``score.weight``)."""
    hf = read_hf_tensors(directory)
    if SCORE not in hf:
        raise UserError(f"{directory}: tensor {SCORE} missing (not a reward model?)")
    try:
        backbone = from_hf_state_dict(hf, headless(config))
    except KeyError as exc:
        raise UserError(f"{directory}: tensor {exc.args[0]} missing from the weights") from None
    del backbone["lm_head.weight"]
    return {**{f"backbone.{k}": v for k, v in backbone.items()}, SCORE: hf[SCORE]}


def build_reward_model(config: ModelConfig, state: dict[str, torch.Tensor]) -> ScalarHeadModel:
    """A :class:`ScalarHeadModel` (bias-free score) holding ``state``'s tensors (no copy)."""
    with torch.device("meta"):
        model = ScalarHeadModel(QwenModel(config), bias=False)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise UserError(f"reward model weights do not match the config: {str(exc).strip().splitlines()[-1]}") from None
    model.backbone.inv_freq = rotary_inv_freq(config.head_dim, config.rope_theta)
    return model


def load_reward_model(directory, device="cpu", dtype: torch.dtype | None = None) -> ScalarHeadModel:
    """The reward model of ``directory`` in eval mode (checksums verified)."""
    directory = Path(directory)
    if not is_reward_dir(directory):
        raise UserError(f"{directory}: not a reward model ({CONFIG_FILE} does not name {ARCHITECTURE}; "
                        "train one with `qwen rlhf reward`)")
    config = read_config(directory)
    check_vocabulary(directory, config)
    verify_checksums(directory)
    model = build_reward_model(config, read_reward_state(directory, config)).to(device)
    return (model.to(dtype) if dtype is not None else model).eval()
