"""Rollouts: sample responses with the generation engine, then score them with all four models.

A rollout batch holds ``prompts × samples_per_prompt`` rows laid out as one tensor: the prompt
left-padded to the widest prompt, then the response right-padded. Response tokens are what the
policy sampled, plus the ``<|im_end|>`` it sampled to stop (a response cut at ``max_new_tokens``
has none). The reward model reads the reward at the end token, so a cut response is scored with
an ``<|im_end|>`` appended (it is not a policy action). Values and log-probabilities are read at
the positions that predict each response token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qwen_cli.inference.generate import generate
from qwen_cli.model import QwenModel
from qwen_cli.model.heads import ScalarHeadModel


@dataclass
class Rollout:
    input_ids: torch.Tensor  # [N, P + R]
    attention_mask: torch.Tensor  # [N, P + R] real tokens
    mask: torch.Tensor  # [N, R] response tokens (actions)
    prompt_width: int
    responses: list[list[int]]  # sampled token ids (stop token excluded), for decoding
    scores: torch.Tensor | None = None  # [N] raw reward-model scores
    logprobs: torch.Tensor | None = None  # [N, R] policy at sampling time
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None

    def rows(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The tensors of rows ``index`` (for a mini batch)."""
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index],
                "mask": self.mask[index]}


def layout(prompts: list[list[int]], responses: list[list[int]], stopped: list[bool], end_id: int,
           pad_id: int) -> Rollout:
    """The rollout tensor of prompts and responses (``stopped``: the response ended with ``end_id``)."""
    width_p = max(map(len, prompts))
    actions = [r + [end_id] if s else list(r) for r, s in zip(responses, stopped, strict=True)]
    width_r = max(1, max(map(len, actions)))
    n = len(prompts)
    ids = torch.full((n, width_p + width_r), pad_id, dtype=torch.long)
    real = torch.zeros(n, width_p + width_r, dtype=torch.bool)
    for row, (prompt, action) in enumerate(zip(prompts, actions, strict=True)):
        ids[row, width_p - len(prompt) : width_p] = torch.tensor(prompt)
        ids[row, width_p : width_p + len(action)] = torch.tensor(action, dtype=torch.long)
        real[row, width_p - len(prompt) : width_p + len(action)] = True
    return Rollout(ids, real, real[:, width_p:].clone(), width_p, responses)


def response_logprobs(model: QwenModel, batch: dict, prompt_width: int) -> torch.Tensor:
    """``[N, R]`` log-probability of each response token under ``model`` (0 at padding)."""
    hidden = model.hidden_states(batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = model.lm_head(hidden[:, prompt_width - 1 : -1]).float()
    targets = batch["input_ids"][:, prompt_width:]
    return torch.log_softmax(logits, dim=-1).gather(2, targets[..., None]).squeeze(2) * batch["mask"]


def response_values(model: ScalarHeadModel, batch: dict, prompt_width: int) -> torch.Tensor:
    """``[N, R]`` value estimate at each response step (read before the token is chosen)."""
    values = model.values(batch["input_ids"], attention_mask=batch["attention_mask"])
    return values[:, prompt_width - 1 : -1] * batch["mask"]


def end_scores(reward: ScalarHeadModel, rollout: Rollout, end_id: int, pad_id: int) -> torch.Tensor:
    """``[N]`` reward-model scores at each response's end token (appended where the response was cut).

    A response ends at ``prompt_width + its action count`` (prompts are left-padded, so the count of
    real tokens is not a position).
    """
    ids, real = rollout.input_ids, rollout.attention_mask
    rows = torch.arange(len(ids), device=ids.device)
    after = rollout.prompt_width + rollout.mask.sum(1).to(ids.device)  # one past each response's last token
    cut = ids[rows, after - 1] != end_id
    if cut.any():
        ids = torch.cat([ids, torch.full((len(ids), 1), pad_id, dtype=ids.dtype, device=ids.device)], dim=1)
        real = torch.cat([real, torch.zeros(len(ids), 1, dtype=torch.bool, device=ids.device)], dim=1)
        ids[rows[cut], after[cut]] = end_id
        real[rows[cut], after[cut]] = True
    return reward.pooled(ids, after - 1 + cut.long(), attention_mask=real)


@torch.no_grad()
def sample(policy: QwenModel, prompts: list[list[int]], max_new_tokens: int, top_p: float, temperature: float,
           end_id: int, pad_id: int, seed: int) -> Rollout:
    """Sample one response per prompt (repeat prompts for several samples) and lay them out."""
    responses = generate(policy, prompts, max_new_tokens, temperature=temperature, top_p=top_p,
                         stop_ids=(end_id,), seed=seed)
    stopped = [len(r) < max_new_tokens for r in responses]
    return layout(prompts, responses, stopped, end_id, pad_id)


@torch.no_grad()
def score(rollout: Rollout, policy: QwenModel, reference: QwenModel, value: ScalarHeadModel,
          reward: ScalarHeadModel, end_id: int, pad_id: int, chunk: int) -> None:
    """Fill ``scores``, ``logprobs``, ``ref_logprobs`` and ``values`` in chunks of ``chunk`` rows."""
    parts: dict[str, list[torch.Tensor]] = {"logprobs": [], "ref_logprobs": [], "values": []}
    n = len(rollout.input_ids)
    for start in range(0, n, chunk):
        batch = rollout.rows(torch.arange(start, min(start + chunk, n)))
        parts["logprobs"].append(response_logprobs(policy, batch, rollout.prompt_width))
        parts["ref_logprobs"].append(response_logprobs(reference, batch, rollout.prompt_width))
        parts["values"].append(response_values(value, batch, rollout.prompt_width))
    for key, pieces in parts.items():
        setattr(rollout, key, torch.cat(pieces))
    rollout.scores = end_scores(reward, rollout, end_id, pad_id).float()
