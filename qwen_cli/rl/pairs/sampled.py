"""Comparison pairs from a chat model's own samples, judged against each prompt's known answer.

The report's reward-model data (§3.2.1) are responses sampled from the models being aligned, then
ranked by people. Where a prompt has a known answer the judge can be exact: for every prompt of a
``{"prompt", "answer"}`` JSONL file (``prompts.jsonl`` of ``qwen rlhf pairs arithmetic|addition``),
``samples`` replies are drawn with nucleus sampling, as PPO's rollouts are, and judged by the GSM8K
rule ``qwen eval`` uses (the reply's last number equals the answer). Every distinct wrong reply
becomes a pair's ``rejected`` side; ``chosen`` is a right reply the model wrote to the same prompt
(cycling through the distinct ones), or the known answer itself where it wrote none. A reward model
trained on these learns to judge what the policy actually writes, the distribution PPO feeds it,
not only hand-made near misses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qwen_cli.data.chat_template import ChatTemplate
from qwen_cli.evaluation.harness.scoring import gsm8k_correct
from qwen_cli.inference.generate import generate
from qwen_cli.model import QwenModel


@dataclass
class SampleStats:
    """What one run drew and kept."""

    prompts: int = 0
    samples: int = 0
    right: int = 0
    pairs: int = 0


@dataclass(frozen=True)
class Sampling:
    """How replies are drawn: per prompt, at most ``max_new_tokens`` each, nucleus ``top_p`` at ``temperature``."""

    samples: int = 4
    max_new_tokens: int = 64
    top_p: float = 0.9
    temperature: float = 1.0
    seed: int = 0
    prompts_per_batch: int = 64


def judged_pairs(prompt, answer: str, replies: list[str], stats: SampleStats) -> list[dict]:
    """The pair records of one prompt's sampled ``replies`` (see the module docstring)."""
    right = [reply for reply in replies if gsm8k_correct(reply, answer)]
    wrong = [reply for reply in dict.fromkeys(replies) if not gsm8k_correct(reply, answer)]
    chosen = list(dict.fromkeys(right)) or [answer]
    stats.prompts += 1
    stats.samples += len(replies)
    stats.right += len(right)
    stats.pairs += len(wrong)
    return [{"prompt": prompt, "chosen": chosen[i % len(chosen)], "rejected": reply, "source": "samples"}
            for i, reply in enumerate(wrong)]


def sample_pairs(model: QwenModel, template: ChatTemplate, records: list[tuple[list, dict]], sampling: Sampling,
                 on_prompts: Callable[[int], None] = lambda n: None) -> tuple[list[dict], SampleStats]:
    """Pair records for ``records`` (``(prompt messages, {"prompt", "answer", ...})``) and what was drawn;
    ``on_prompts(n)`` after each batch of ``n`` prompts."""
    stats, out = SampleStats(), []
    room = model.config.max_position_embeddings - sampling.max_new_tokens
    k = sampling.samples
    for start in range(0, len(records), sampling.prompts_per_batch):
        batch = records[start : start + sampling.prompts_per_batch]
        ids = [template.prompt(messages, max_len=room) for messages, _ in batch for _ in range(k)]
        replies = generate(model.eval(), ids, sampling.max_new_tokens, temperature=sampling.temperature,
                           top_p=sampling.top_p, stop_ids=(template.tokenizer.im_end_id,), seed=sampling.seed + start)
        texts = [template.tokenizer.decode(reply) for reply in replies]
        for i, (_, record) in enumerate(batch):
            out += judged_pairs(record["prompt"], str(record["answer"]), texts[i * k : (i + 1) * k], stats)
        on_prompts(len(batch))
    return out, stats
