"""The two decode paths behind ``generate``: today's growing-cache loop and a static-cache compiled step.

Both expose the same three calls: ``prefill()`` runs the whole left-padded prompt batch in one pass
and returns last-position logits [B, V]; ``keep(index)`` drops finished rows; ``step(tokens, step)``
feeds one token per still-running row and returns their next logits.

:class:`EagerDecoder` is the original engine: a KV cache sliced to the keys so far, finished rows
dropped from the batch. :class:`StaticDecoder` runs a fixed-shape step over a :class:`StaticKVCache`:
each new key/value is written at a tensor position and attention covers the whole buffer through a
mask, so a decode step has the same shapes at every length and ``torch.compile`` captures it once per
shape bucket for the whole process. Buckets: the batch is padded up to a power of two
(:func:`batch_bucket`; the extra rows repeat the last prompt and are never read) and the capacity to
``CAPACITY_STEP`` times a power of two (:func:`capacity_bucket`). Finished rows keep running (their
outputs are ignored) so shapes never change mid-generation.

On CUDA the step is compiled in "reduce-overhead" mode: CUDA-graph trees record it once per bucket and
replay it for every later step and generation. That needs every tensor the step writes to stay at one
address: the cache, the key mask and the token/position/slot inputs of a bucket are allocated once per
model (:class:`_Slots`, kept while the model lives), marked static and reset in place by the next
generation of that bucket. The compiled step and these buffers are kept per model;
``compile_seconds`` reports the time the first call of a new bucket took (tracing + code generation),
paid once per process.
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
_SLOTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(batch, capacity, dtype): _Slots}
compile_seconds: dict[tuple, float] = {}  # (backend, batch bucket, capacity) -> seconds of the first call


def batch_bucket(batch: int) -> int:
    """The batch size a step is compiled for: the next power of two (1, 2, 4, 8 …)."""
    return 1 << (batch - 1).bit_length()


def capacity_bucket(tokens: int) -> int:
    """Cache positions for ``tokens`` (prompt + new): ``CAPACITY_STEP`` times the next power of two."""
    return CAPACITY_STEP << max(0, -(-tokens // CAPACITY_STEP) - 1).bit_length()


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


class _Slots:
    """The tensors one bucket's compiled step reads and writes, allocated once (fixed addresses)."""

    def __init__(self, model: QwenModel, batch: int, capacity: int) -> None:
        param = next(model.parameters())
        self.cache = StaticKVCache(model.config, batch, capacity, device=param.device, dtype=param.dtype)
        self.key_mask = torch.zeros(batch, capacity, dtype=torch.bool, device=param.device)
        self.tokens = torch.zeros(batch, 1, dtype=torch.long, device=param.device)
        self.positions = torch.zeros(batch, 1, dtype=torch.long, device=param.device)
        self.slot = torch.zeros(1, dtype=torch.long, device=param.device)
        for buffer in (self.key_mask, self.tokens, self.positions, self.slot):
            torch._dynamo.mark_static_address(buffer)


def _slots(model: QwenModel, batch: int, capacity: int) -> _Slots:
    """This bucket's buffers, reset for a new generation (created on the bucket's first use)."""
    per_model = _SLOTS.setdefault(model, {})
    key = (batch, capacity, next(model.parameters()).dtype)
    if key not in per_model:
        per_model[key] = _Slots(model, batch, capacity)
    slots = per_model[key]
    slots.cache.reset()
    slots.tokens.zero_()
    return slots


class StaticDecoder:
    """Bucketed static buffers + a fixed-shape decode step (compiled with ``backend``; None runs it eagerly)."""

    def __init__(self, model: QwenModel, input_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int,
                 backend: str | None = "inductor"):
        b, width = input_ids.shape
        bucket, capacity = batch_bucket(b), capacity_bucket(width + max_new_tokens)
        pad = bucket - b  # extra rows repeat the last prompt: real work, never read
        self.input_ids = torch.cat([input_ids, input_ids[-1:].expand(pad, width)])
        self.prompt_mask = torch.cat([prompt_mask, prompt_mask[-1:].expand(pad, width)])
        self.model, self.width, self.backend = model, width, backend
        self.slots = _slots(model, bucket, capacity)
        self.cache, self.key_mask = self.slots.cache, self.slots.key_mask
        self.key_mask.zero_()
        self.key_mask[:, :width] = self.prompt_mask
        self.lengths = self.prompt_mask.sum(dim=1)
        self.rows = torch.arange(b, device=input_ids.device)  # bucket row of each row still running
        self.step_fn = _compiled_step(model, backend)
        self.graphs = backend is not None and input_ids.is_cuda and backend == "inductor"
        self.shape_key = (backend, bucket, capacity)

    def prefill(self) -> torch.Tensor:
        mask = torch.ones_like(self.key_mask)
        mask[:, : self.width] = self.prompt_mask
        logits = self.model(self.input_ids, attention_mask=mask, cache=self.cache, num_logits_to_keep=1)[:, -1]
        self.cache.slot = self.slots.slot
        return logits[self.rows]

    def keep(self, index: torch.Tensor) -> None:
        self.rows = self.rows[index]

    def step(self, tokens: torch.Tensor, step: int) -> torch.Tensor:
        slots = self.slots
        slots.tokens[self.rows, 0] = tokens
        slots.slot.fill_(self.width + step)
        slots.positions.copy_((self.lengths + step)[:, None])
        first = self.backend is not None and self.shape_key not in compile_seconds
        start = time.perf_counter()
        if self.graphs:  # the previous replay's logits were read (indexed below) before this one overwrites them
            torch.compiler.cudagraph_mark_step_begin()
        logits = self.step_fn(self.model, self.cache, slots.tokens, slots.positions, self.key_mask)
        if first:
            compile_seconds[self.shape_key] = time.perf_counter() - start
        return logits[self.rows]  # a copy: a CUDA-graph output is overwritten by the next replay
