"""Scoring preference pairs: reward-model pairwise accuracy (report Table 4) and a language model's
preference for the chosen reply (DPO), plus the reply log-probabilities both DPO and scoring use,
and gold exact match of greedy replies to held-out prompts with answers (PPO and DPO report it)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from qwen_cli.data.chat_format import Message
from qwen_cli.data.chat_template import ChatTemplate
from qwen_cli.data.preference import EncodedPair, PairStats, encode_pairs, pair_batch, read_pairs
from qwen_cli.evaluation.harness.scoring import gsm8k_correct
from qwen_cli.inference.generate import generate
from qwen_cli.model import QwenModel
from qwen_cli.model.heads import ScalarHeadModel


def set_name(path: str | Path) -> str:
    """A test set's display name: its file stem, or its directory's name for ``train/test.jsonl``."""
    path = Path(path)
    return path.parent.name if path.stem in ("train", "test", "val") and path.parent.name else path.stem


def reply_logprobs(model: QwenModel, batch: dict) -> torch.Tensor:
    """Summed log-probability of each row's reply tokens (``labels != -100``), ``[rows]`` fp32.

    Logits are computed only at reply positions (a ``[reply tokens, vocab]`` matrix, not
    ``[rows, width, vocab]``).
    """
    hidden = model.hidden_states(batch["input_ids"], attention_mask=batch["attention_mask"])
    labels = batch["labels"]
    rows, cols = (labels != -100).nonzero(as_tuple=True)
    logits = model.lm_head(hidden[rows, cols]).float()
    token_logprobs = torch.log_softmax(logits, dim=-1).gather(1, labels[rows, cols, None]).squeeze(1)
    return torch.zeros(labels.shape[0], device=hidden.device).index_add(0, rows, token_logprobs)


def pair_rewards(model: ScalarHeadModel, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen rewards, rejected rewards), each ``[pairs]``: the score at each reply's end token."""
    rewards = model.pooled(batch["input_ids"], batch["end_index"], attention_mask=batch["attention_mask"])
    half = rewards.shape[0] // 2
    return rewards[:half], rewards[half:]


def pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """``-log σ(r_chosen − r_rejected)`` per pair (the Bradley–Terry loss of reward modelling)."""
    return -F.logsigmoid(chosen - rejected)


@torch.no_grad()
def margins(score, pairs: list[EncodedPair], pad_id: int, batch_size: int = 16) -> torch.Tensor:
    """``score(batch) -> (chosen, rejected)`` over all pairs, in batches; returns chosen − rejected ``[pairs]``."""
    out = []
    for start in range(0, len(pairs), batch_size):
        chosen, rejected = score(pair_batch(pairs[start : start + batch_size], pad_id))
        out.append((chosen - rejected).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def load_test_pairs(path: str | Path, template: ChatTemplate, seq_len: int) -> list[EncodedPair]:
    """A preference JSONL file encoded for scoring."""
    return encode_pairs(template, read_pairs(path), seq_len, PairStats())


def reward_accuracy(model: ScalarHeadModel, pairs: list[EncodedPair], pad_id: int) -> dict[str, float]:
    """Pairwise accuracy (ties count as wrong), mean reward margin and pair count of a reward model."""
    model.eval()
    diff = margins(lambda batch: pair_rewards(model, batch), pairs, pad_id)
    return summary(diff)


def likelihood_accuracy(model: QwenModel, pairs: list[EncodedPair], pad_id: int) -> dict[str, float]:
    """How often a language model gives the chosen reply a higher log-probability than the rejected one."""
    model.eval()

    def score(batch):
        logprobs = reply_logprobs(model, batch)
        half = logprobs.shape[0] // 2
        return logprobs[:half], logprobs[half:]

    return summary(margins(score, pairs, pad_id))


def summary(diff: torch.Tensor) -> dict[str, float]:
    """Accuracy (margin > 0), mean margin and count of a vector of chosen − rejected margins."""
    n = diff.numel()
    return {"accuracy": float((diff > 0).float().mean()) if n else 0.0,
            "margin": float(diff.mean()) if n else 0.0, "pairs": n}


def gold_hits(tokenizer, replies: list[list[int]], answers: list[str]) -> list[bool]:
    """Per reply (token ids): is its final number the gold answer (GSM8K's rule)?"""
    return [gsm8k_correct(tokenizer.decode(reply), answer) for reply, answer in zip(replies, answers, strict=True)]


def exact_match(tokenizer, replies: list[list[int]], answers: list[str]) -> float:
    """Share of replies (token ids) whose final number is the gold answer (GSM8K's rule)."""
    hits = gold_hits(tokenizer, replies, answers)
    return sum(hits) / len(hits) if hits else 0.0


def ranking_accuracy(scores: torch.Tensor, right: list[bool]) -> float | None:
    """How often a right reply outscores a wrong one, over every (right, wrong) pair of a batch (ties count
    half: the ROC AUC of ``scores`` for telling right from wrong). ``None`` without both kinds.

    PPO logs it for its own samples: a reward model that ranks near-miss pairs well can still be wrong on
    what the policy writes, and this number falls as the policy learns to exploit it."""
    right_t = torch.tensor(right, dtype=torch.bool, device=scores.device)
    good, bad = scores[right_t].float(), scores[~right_t].float()
    if not len(good) or not len(bad):
        return None
    diff = good[:, None] - bad[None, :]
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


@torch.no_grad()
def gold_accuracy(model: QwenModel, template: ChatTemplate, questions: list[tuple[list[Message], str]],
                  max_new_tokens: int) -> dict[str, float]:
    """Greedy gold exact match on ``(prompt messages, answer)`` questions (``read_gold_questions``)."""
    room = model.config.max_position_embeddings - max_new_tokens
    ids = [template.prompt(messages, max_len=room) for messages, _ in questions]
    replies = generate(model.eval(), ids, max_new_tokens, temperature=0.0, stop_ids=(template.tokenizer.im_end_id,),
                       seed=0)
    return {"gold": exact_match(template.tokenizer, replies, [answer for _, answer in questions]),
            "prompts": len(questions)}
