"""The generation engine shared by chat, evaluation and RL rollouts.

``generate(model, prompts, max_new_tokens, ...)`` left-pads a batch of token-id prompts of
different lengths, runs one prefill pass that fills a preallocated :class:`~qwen_cli.model.KVCache`,
then decodes one token per step, computing logits only for the last position.

Sampling: greedy when ``temperature == 0`` (the default); otherwise logits / temperature, then
top-k, then top-p (nucleus) filtering, and a draw from a ``torch.Generator`` seeded with ``seed``,
so a seed gives the same tokens every run. ``repetition_penalty`` (CTRL/Hugging Face convention)
divides positive and multiplies negative logits of every token already in the row's prompt or
output.

Stopping, per row: a token in ``stop_ids`` ends the row and is *not* returned (nor streamed);
a token that completes one of ``stop_strings`` (matched on decoded text, so a ``tokenizer`` is
required) ends the row and *is* returned — tokens cannot be split, so the decoded reply may run
past the stop string and callers cut the text; ``max_new_tokens`` ends every row. Finished rows
are dropped from the batch (and the cache), so they stop costing compute.

``on_token(batch_index, token_id)`` is called for every returned token as soon as it is chosen
(``batch_index`` indexes ``prompts``); an exception raised there (e.g. KeyboardInterrupt) stops
generation and propagates.

``compile``: False runs the eager growing-cache loop; True (or a ``torch.compile`` backend name such
as ``"eager"``) decodes with a preallocated static cache and a step compiled once per batch and
length bucket (``qwen_cli.inference.static_decode``; on CUDA the step is captured as a CUDA graph and
replayed), falling back to the eager loop for models that use inference-time context extension.
Both give the same greedy tokens. None (the default) means True on CUDA and False elsewhere, so
``qwen eval`` generation, PPO rollouts and the specialisation evals take the graph path on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from qwen_cli.inference.static_decode import EagerDecoder, StaticDecoder, static_supported
from qwen_cli.model import QwenModel

TokenCallback = Callable[[int, int], None]


def _check_args(prompts, max_new_tokens, temperature, top_p, top_k, repetition_penalty, stop_strings, tokenizer):
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {repetition_penalty}")
    if stop_strings and tokenizer is None:
        raise ValueError("stop_strings need a tokenizer to decode the generated text")


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k and outside the smallest set with probability >= top_p to -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already reach top_p (the first always stays)
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def penalize_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make every token marked in ``seen`` [B, V] less likely: positive logits / penalty, negative · penalty."""
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def next_tokens(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """One token id per row from last-position logits [B, V]."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


class _StopStrings:
    """Detects a stop string completed by the newest token, decoding only the tail of the output."""

    def __init__(self, stop_strings: Sequence[str], tokenizer) -> None:
        self.strings = [s for s in stop_strings if s]
        self.tokenizer = tokenizer
        # every token is >= 1 byte, so a string of n bytes ending in the newest token lies in the last n tokens
        self.window = max((len(s.encode()) for s in self.strings), default=0) + 1

    def hit(self, output: list[int]) -> bool:
        if not self.strings:
            return False
        tail = self.tokenizer.decode(output[-self.window :])
        return any(s in tail for s in self.strings)


def left_pad(prompts: Sequence[Sequence[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [B, P], real-token mask [B, P]) with shorter prompts padded on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = True
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def generate(
    model: QwenModel,
    prompts: list[list[int]],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    repetition_penalty: float = 1.0,
    stop_ids: Sequence[int] = (),
    stop_strings: Sequence[str] = (),
    tokenizer=None,
    seed: int | None = None,
    on_token: TokenCallback | None = None,
    compile: bool | str | None = None,
) -> list[list[int]]:
    """New token ids for each prompt (stop ids excluded); see the module docstring."""
    _check_args(prompts, max_new_tokens, temperature, top_p, top_k, repetition_penalty, stop_strings, tokenizer)
    outputs: list[list[int]] = [[] for _ in prompts]
    if not prompts or max_new_tokens == 0:
        return outputs
    device = next(model.parameters()).device
    if compile is None:
        compile = device.type == "cuda"
    generator = None
    if seed is not None and temperature > 0:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    stops = set(stop_ids)
    stop_text = _StopStrings(stop_strings, tokenizer)

    input_ids, prompt_mask = left_pad(prompts, device)
    seen = None
    if repetition_penalty != 1.0:
        seen = torch.zeros(len(prompts), model.config.vocab_size, dtype=torch.bool, device=device)
        for row, prompt in enumerate(prompts):
            seen[row, torch.tensor(prompt, device=device)] = True
    rows = list(range(len(prompts)))  # original index of each row still in the batch

    was_training = model.training
    model.eval()
    try:
        if compile and static_supported(model):
            backend = "inductor" if compile is True else compile
            decoder = StaticDecoder(model, input_ids, prompt_mask, max_new_tokens, backend)
        else:
            decoder = EagerDecoder(model, input_ids, prompt_mask, max_new_tokens)
        logits = decoder.prefill()
        for step in range(max_new_tokens):
            if seen is not None:
                logits = penalize_repeats(logits, seen, repetition_penalty)
            chosen = next_tokens(logits, temperature, top_k, top_p, generator)
            keep = []
            for row, token in enumerate(chosen.tolist()):
                out = outputs[rows[row]]
                if token in stops:
                    continue
                out.append(token)
                if on_token is not None:
                    on_token(rows[row], token)
                if len(out) < max_new_tokens and not stop_text.hit(out):
                    keep.append(row)
            if not keep:
                break
            if len(keep) < len(rows):
                index = torch.tensor(keep, device=device)
                decoder.keep(index)
                chosen = chosen[index]
                seen = seen[index] if seen is not None else None
                rows = [rows[r] for r in keep]
            if seen is not None:
                seen.scatter_(1, chosen[:, None], True)
            logits = decoder.step(chosen, step)
    finally:
        model.train(was_training)
    return outputs
