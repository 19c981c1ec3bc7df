"""Losses of the training stages, each returning ``(loss summed over n counted units, n, metrics)``."""

from __future__ import annotations

from qwen_cli.kernels.cross_entropy import linear_cross_entropy
from qwen_cli.model import QwenModel


def causal_lm_loss(model: QwenModel, batch: dict, chunk: int = 0):
    """Summed next-token cross-entropy over labels != -100 (fused output projection, no full logits).

    Packed rows pass ``segment_ids`` so attention never crosses documents/conversations.
    """
    hidden = model.hidden_states(batch["input_ids"], segment_ids=batch.get("segment_ids"))
    loss, n = linear_cross_entropy(hidden, model.lm_head.weight, batch["labels"], chunk=chunk,
                                   backend=model.config.kernels)
    return loss, n, {}
