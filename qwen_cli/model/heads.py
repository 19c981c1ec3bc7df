"""Scalar heads on the Qwen decoder: a value head (one number per token) and a reward head (one per sequence).

The LM head is the decoder's own ``lm_head``. :class:`ScalarHeadModel` wraps a ``QwenModel`` and
projects its final hidden states to one scalar: read at every position it is PPO's value
function, read at one position per sequence (the end token, report §3.2.1: "a pooling layer
reads the reward at an end token") it is the reward model. The backbone's ``lm_head`` is
dropped (``None``): a scalar model never computes token logits, and the output matrix is the
largest single weight of a small model.
"""

from __future__ import annotations

import torch
from torch import nn

from qwen_cli.model.decoder import QwenModel


class ScalarHeadModel(nn.Module):
    """A decoder plus ``score``: Linear(hidden, 1), initialised to zero (every scalar starts at 0).

    ``bias=False`` is the layout of transformers' ``Qwen2ForSequenceClassification`` (the reward
    model); the value head keeps a bias (its returns are not centred).
    """

    def __init__(self, backbone: QwenModel, bias: bool = True) -> None:
        super().__init__()
        backbone.lm_head = None
        self.backbone = backbone
        self.config = backbone.config
        self.score = nn.Linear(backbone.config.hidden_size, 1, bias=bias)
        nn.init.zeros_(self.score.weight)
        if bias:
            nn.init.zeros_(self.score.bias)

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        """One scalar per position ``[B, T]`` (fp32), e.g. PPO's value estimates."""
        hidden = self.backbone.hidden_states(input_ids, attention_mask=attention_mask, segment_ids=segment_ids)
        return self.score(hidden).squeeze(-1).float()

    def pooled(self, input_ids: torch.Tensor, end_index: torch.Tensor,
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One scalar per sequence ``[B]``: the value read at ``end_index[b]`` (the end token), the reward."""
        values = self.values(input_ids, attention_mask=attention_mask)
        return values.gather(1, end_index.long().view(-1, 1)).squeeze(1)
