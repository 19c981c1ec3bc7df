"""What ``qwen specialize`` measures after its last stage, so a small model's gain is visible.

* **code**: perplexity on the held-out code documents (never trained on, in any stage) at each
  length of ``[evaluate] lengths``: the documents are encoded with the shared tokenizer and joined
  with ``<|endoftext|>``; the first ``code_windows`` windows of the longest length fix the tokens
  scored, and every length cuts that same span into windows of its own size (so the lengths differ
  only in how much context each prediction sees); the loss is the mean next-token cross-entropy.
* **math**: exact match on the held-out math questions, asked the way a chat model is used: the
  ChatML prompt (default system prompt, the question as the user turn), greedy decoding (the
  report's setting), the reply compared with :func:`qwen_cli.evaluation.harness.tasks.exact_answer`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from qwen_cli.checkpoint import load
from qwen_cli.data.jinja_chat import chat_template_for
from qwen_cli.data.shards import lm_batch
from qwen_cli.evaluation.harness.tasks import exact_answer
from qwen_cli.inference.generate import generate
from qwen_cli.stages.losses import causal_lm_loss


def token_stream(tokenizer, texts: list[str], needed: int) -> np.ndarray:
    """``texts`` encoded and joined with ``<|endoftext|>``, stopping once ``needed`` tokens are there."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer.encode(text) + [tokenizer.eot_id]
        if len(ids) >= needed:
            break
    return np.asarray(ids, dtype=np.int64)


@torch.no_grad()
def perplexity(model_dir: Path, texts: list[str], lengths: list[int], windows: int, batch_size: int) -> dict[str, float]:
    """Held-out perplexity of ``model_dir`` at each length (key: the length as text), on the same tokens."""
    model, tokenizer = load(model_dir)
    stream = token_stream(tokenizer, texts, max(lengths) * windows + 1)
    span = min(max(lengths) * windows, (len(stream) - 1) // max(lengths) * max(lengths))
    result = {}
    for length in lengths:
        count = span // length
        total, n = 0.0, 0
        for start in range(0, count, batch_size):
            rows = [stream[i * length : (i + 1) * length + 1] for i in range(start, min(start + batch_size, count))]
            loss, tokens, _ = causal_lm_loss(model, lm_batch(rows))
            total, n = total + float(loss), n + int(tokens)
        result[str(length)] = math.exp(total / n) if n else float("nan")
    return result


@torch.no_grad()
def math_exact_match(model_dir: Path, rows: list[dict], max_new_tokens: int, batch_size: int,
                     temperature: float = 0.0) -> dict:
    """Exact match of ``model_dir``'s chat replies on held-out rows (``question``, ``answer``)."""
    model, tokenizer = load(model_dir)
    template = chat_template_for(tokenizer)
    correct, samples = 0, []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        prompts = [template.prompt([{"role": "user", "content": row["question"]}]) for row in chunk]
        outputs = generate(model, prompts, max_new_tokens, temperature=temperature, stop_ids=template.stop_ids,
                           seed=0)
        for row, output in zip(chunk, outputs, strict=True):
            reply = tokenizer.decode(output)
            ok = exact_answer(reply, row["answer"])
            correct += ok
            if len(samples) < 5:
                samples.append({"question": row["question"], "answer": row["answer"], "reply": reply, "correct": ok})
    return {"items": len(rows), "correct": correct, "exact_match": correct / len(rows) if rows else float("nan"),
            "samples": samples}
