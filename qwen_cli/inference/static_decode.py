"""The two decode paths behind ``generate``: today's growing-cache loop and a static-cache compiled step.

Both expose the same three calls: ``prefill()`` runs the whole left-padded prompt batch in one pass
and returns last-position logits [B, V]; ``keep(index)`` drops finished rows; ``step(tokens, step)``
feeds one token per still-running row and returns their next logits.

:class:`EagerDecoder` is the original engine: a KV cache sliced to the keys so far, finished rows
dropped from the batch. :class:`StaticDecoder` preallocates a :class:`StaticKVCache` whose capacity
is rounded up to a multiple of ``CAPACITY_STEP``, writes each new key/value at a tensor position and
attends over the whole buffer through a mask, so a decode step has the same shapes at every length
and ``torch.compile`` captures it once (per batch size and capacity bucket) for the whole process.
Finished rows keep running (their outputs are ignored) so shapes never change mid-generation.
On CUDA the step is compiled in "reduce-overhead" mode (CUDA graphs; not yet run on a GPU here).
The compiled step and its cache are kept per model; ``compile_seconds`` reports the time the first
call of a new shape took (tracing + code generation), paid once per process.
"""

from __future__ import annotations

import time
import weakref

import torch

from qwen_cli.model import KVCache, QwenModel
from qwen_cli.model.kv_cache import StaticKVCache
from qwen_cli.model.rope import rotary_cos_sin

CAPACITY_STEP = 128
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {backend: compiled step}
compile_seconds: dict[tuple, float] = {}  # (backend, batch, capacity) -> seconds of the first (compiling) call


def static_supported(model: QwenModel) -> bool:
    """The static path covers plain RoPE and full attention; context extension stays on the eager path."""
    cfg = model.config
    return cfg.rope_ntk == "none" and not cfg.logn_attn and not cfg.layer_windows


class EagerDecoder:
    """Today's engine: cache grows with the sequence, finished rows leave the batch."""

    def __init__(self, model: QwenModel, input_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int):
        self.model, self.input_ids = model, input_ids
        b, width = input_ids.shape
        # One mask over the whole cache; future slots are True and the model slices to the keys so far.
        # It is passed even without padding: torch's CPU SDPA is ~100x slower for a one-token query
        # without a mask (its flash kernel) than with one.
        self.attention_mask = torch.cat([prompt_mask, prompt_mask.new_ones(b, max_new_tokens)], dim=1)
        self.lengths = prompt_mask.sum(dim=1)
        param = next(model.parameters())
        self.cache = KVCache(model.config, b, width + max_new_tokens, device=param.device, dtype=param.dtype)

    def prefill(self) -> torch.Tensor:
        return self.model(self.input_ids, attention_mask=self.attention_mask, cache=self.cache,
                          num_logits_to_keep=1)[:, -1]

    def keep(self, index: torch.Tensor) -> None:
        self.cache.reorder(index)
        self.attention_mask, self.lengths = self.attention_mask[index], self.lengths[index]

    def step(self, tokens: torch.Tensor, step: int) -> torch.Tensor:
        return self.model(tokens[:, None], position_ids=(self.lengths + step)[:, None],
                          attention_mask=self.attention_mask, cache=self.cache, num_logits_to_keep=1)[:, -1]


def decode_step(model: QwenModel, cache: StaticKVCache, tokens: torch.Tensor, positions: torch.Tensor,
                key_mask: torch.Tensor) -> torch.Tensor:
    """Logits [B, V] for one new token per row; writes its key/value at ``cache.slot``, marks it in ``key_mask``."""
    key_mask.index_fill_(1, cache.slot, True)
    x = model.embed_tokens(tokens)
    cos, sin = rotary_cos_sin(positions, model.inv_freq, x.dtype)
    mask = key_mask[:, None, None, :]
    for block in model.layers:
        x = block(x, cos, sin, mask, False, cache)
    return model.lm_head(model.norm(x))[:, -1]


def _compiled_step(model: QwenModel, backend: str | None):
    if backend is None:
        return decode_step
    per_model = _COMPILED.setdefault(model, {})
    if backend not in per_model:
        # On CUDA, inductor's "reduce-overhead" mode replays the step as a CUDA graph (the cache and mask
        # live at fixed addresses); torch falls back to plain kernels where a graph cannot be captured.
        cuda = next(model.parameters()).is_cuda and backend == "inductor"
        per_model[backend] = torch.compile(decode_step, backend=backend, dynamic=False,
                                           mode="reduce-overhead" if cuda else None)
    return per_model[backend]


class StaticDecoder:
    """Preallocated cache + a fixed-shape decode step (compiled with ``backend``; None runs it eagerly)."""

    def __init__(self, model: QwenModel, input_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int,
                 backend: str | None = "inductor"):
        self.model, self.input_ids, self.prompt_mask = model, input_ids, prompt_mask
        b, width = input_ids.shape
        capacity = -(-(width + max_new_tokens) // CAPACITY_STEP) * CAPACITY_STEP
        param = next(model.parameters())
        self.cache = StaticKVCache(model.config, b, capacity, device=param.device, dtype=param.dtype)
        self.key_mask = torch.zeros(b, capacity, dtype=torch.bool, device=param.device)
        self.key_mask[:, :width] = prompt_mask
        self.lengths = prompt_mask.sum(dim=1)
        self.width, self.backend = width, backend
        self.rows = torch.arange(b, device=param.device)  # full-batch index of each row still running
        self.tokens = torch.zeros(b, 1, dtype=torch.long, device=param.device)
        self.step_fn = _compiled_step(model, backend)
        self.shape_key = (backend, b, capacity)

    def prefill(self) -> torch.Tensor:
        mask = torch.ones_like(self.key_mask)
        mask[:, : self.width] = self.prompt_mask
        logits = self.model(self.input_ids, attention_mask=mask, cache=self.cache, num_logits_to_keep=1)[:, -1]
        self.cache.slot = torch.tensor([self.width], device=self.key_mask.device)
        return logits

    def keep(self, index: torch.Tensor) -> None:
        self.rows = self.rows[index]

    def step(self, tokens: torch.Tensor, step: int) -> torch.Tensor:
        self.tokens[self.rows, 0] = tokens
        self.cache.slot.fill_(self.width + step)
        positions = (self.lengths + step)[:, None]
        first = self.backend is not None and self.shape_key not in compile_seconds
        start = time.perf_counter()
        logits = self.step_fn(self.model, self.cache, self.tokens, positions, self.key_mask)
        if first:
            compile_seconds[self.shape_key] = time.perf_counter() - start
        return logits[self.rows] if len(self.rows) < len(self.tokens) else logits
