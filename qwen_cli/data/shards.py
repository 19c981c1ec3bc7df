"""Read token shards (``qwen tokenize encode``) as fixed-length training sequences.

Packing happens here, at read time, as in the Qwen report ("documents are shuffled,
concatenated and cut to length"): the shards of a split are memory-mapped and read as one
stream of ids (each document already ends with ``<|endoftext|>``); window ``i`` is ids
``[i·L, i·L + L + 1)`` for sequence length ``L``, giving inputs ``window[:-1]`` and labels
``window[1:]``. There are ``(tokens - 1) // L`` windows; no token is dropped except a tail
shorter than one sequence.

Order: each epoch visits every window once in a permutation keyed by ``(seed, epoch)``
(:mod:`qwen_cli.data.permutation`: a Feistel network evaluated per index, O(1) memory for any
number of windows). The *global* sequence index ``k`` maps to window ``perm(k // W)[k % W]``, so
the position in the data is one integer — the number of sequences consumed by finished optimizer
steps — valid for any world size or micro-batch layout, and reached in O(1) on resume. Within a
step of ``G`` global sequences, rank ``r``'s micro batch ``m`` takes global indices
``start + (r·accum + m)·b …`` (``b`` = micro batch size): the ranks split consecutive global
indices between them, so together they read every window of an epoch exactly once, none twice.
The saved position names the order (``"order"``, :data:`~qwen_cli.data.permutation.FORMAT`); a
position saved under another order is refused, since it would not continue the same stream.

Mixtures (:class:`MixedBatches`, recipe ``data.sources``): global sequences are dealt out in
blocks of ``MIX_BLOCK``; each block holds exactly ``quota_i`` sequences of source ``i`` (the
weights turned into whole shares of the block by largest remainder), in an order shuffled from
``(seed, block)``. The ``j``-th sequence taken from source ``i`` is window ``j`` of that source's
own epoch permutations. Both are pure functions of the global index, so the position is still
one integer, memory is O(block) whatever the corpus size, and ranks still read disjoint slices.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qwen_cli.data.encode import DTYPE, read_manifest
from qwen_cli.data.permutation import FORMAT as ORDER_FORMAT
from qwen_cli.data.permutation import EpochPermutation
from qwen_cli.errors import UserError


@dataclass(frozen=True)
class BatchLayout:
    """How one optimizer step's global batch is split over ranks and micro steps."""

    rank: int
    world_size: int
    micro_batch_size: int
    accum_steps: int

    @property
    def global_sequences(self) -> int:
        return self.world_size * self.accum_steps * self.micro_batch_size

    def micro_start(self, step_start: int, micro: int) -> int:
        """Global index of the first sequence of this rank's ``micro``-th micro batch."""
        return step_start + (self.rank * self.accum_steps + micro) * self.micro_batch_size


class TokenWindows:
    """The windows of one split of a shard directory (memory-mapped, nothing loaded up front)."""

    def __init__(self, directory: str | Path, split: str, seq_len: int) -> None:
        directory = Path(directory)
        manifest = read_manifest(directory)
        if split not in manifest.get("splits", {}):
            raise UserError(f"{directory / 'manifest.json'}: no '{split}' split")
        self.arrays, counts = [], []
        for entry in manifest["splits"][split]["shards"]:
            path = directory / entry["file"]
            if not path.is_file():
                raise UserError(f"{path}: shard listed in the manifest is missing")
            if path.stat().st_size != entry["tokens"] * DTYPE.itemsize:
                raise UserError(f"{path}: {path.stat().st_size} bytes, the manifest says {entry['tokens']} tokens "
                                "(truncated or altered shard)")
            if entry["tokens"]:
                self.arrays.append(np.memmap(path, dtype=DTYPE, mode="r"))
                counts.append(entry["tokens"])
        self.offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.tokens = int(self.offsets[-1])
        self.seq_len = seq_len
        self.num_windows = max(self.tokens - 1, 0) // seq_len

    def window(self, index: int) -> np.ndarray:
        """Ids of window ``index``: ``seq_len + 1`` tokens, possibly spanning shards."""
        start, end = index * self.seq_len, index * self.seq_len + self.seq_len + 1
        shard = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pieces = []
        while start < end:
            local = start - self.offsets[shard]
            take = min(end - start, int(self.offsets[shard + 1] - start))
            pieces.append(self.arrays[shard][local : local + take])
            start += take
            shard += 1
        return np.concatenate(pieces).astype(np.int64)

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``labels`` [len(indices), seq_len] for the given windows."""
        return lm_batch([self.window(i) for i in indices])


def lm_batch(windows: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Next-token batch from windows of ``seq_len + 1`` ids: inputs ``w[:-1]``, labels ``w[1:]``."""
    rows = torch.from_numpy(np.stack(windows))
    return {"input_ids": rows[:, :-1].contiguous(), "labels": rows[:, 1:].contiguous()}


class ResumableBatches:
    """Iterator of this rank's micro batches whose position is exact between optimizer steps.

    The position is one number — global sequences consumed by finished steps — so it stays
    valid for any world size or micro-batch layout. Subclasses map global sequence indices to
    a batch in ``_batch``; those whose order is an :class:`EpochPermutation` set
    ``order_format`` (saved with the position, checked on load).
    """

    order_format: str | None = None

    def __init__(self, layout: BatchLayout, seed: int) -> None:
        self.layout, self.seed = layout, seed
        self.step_start = 0  # global sequences consumed by finished steps
        self.micro = 0

    def _batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        first = self.layout.micro_start(self.step_start, self.micro)
        batch = self._batch([first + j for j in range(self.layout.micro_batch_size)])
        self.micro += 1
        if self.micro == self.layout.accum_steps:
            self.micro = 0
            self.step_start += self.layout.global_sequences
        return batch

    def state_dict(self) -> dict:
        if self.micro:
            raise RuntimeError("data position is only defined between optimizer steps")
        state = {"sequences": self.step_start, "seed": self.seed}
        return state if self.order_format is None else {**state, "order": self.order_format}

    def load_state_dict(self, state: dict) -> None:
        if self.order_format is not None and state.get("order") != self.order_format:
            saved = state.get("order") or "the in-memory permutation of earlier versions"
            raise UserError(f"checkpoint data position {state}: saved under data order {saved!r}, this version reads "
                            f"windows in order {self.order_format!r}, so it cannot continue the same batches; finish "
                            "the run with the version that started it, or start a new run")
        self.step_start, self.micro, self.seed = int(state["sequences"]), 0, int(state["seed"])


def _check_trainable(windows: TokenWindows, what: str) -> None:
    if windows.num_windows == 0:
        raise UserError(f"{what} has {windows.tokens} tokens, fewer than one sequence of "
                        f"{windows.seq_len} + 1 (lower data.seq_len or add data)")


class ShuffledBatches(ResumableBatches):
    """Windows of the token stream in a fresh permutation every epoch."""

    order_format = ORDER_FORMAT

    def __init__(self, windows: TokenWindows, layout: BatchLayout, seed: int) -> None:
        _check_trainable(windows, "the training split")
        super().__init__(layout, seed)
        self.windows = windows
        self.order = EpochPermutation(windows.num_windows, [seed])

    def _batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self.windows.batch([self.order[k] for k in indices])

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.order = EpochPermutation(self.windows.num_windows, [self.seed])


MIX_BLOCK = 1024
_MIX_STREAM = 0x6D6978  # keeps the mixture's random streams apart from the single-source ones


def block_quotas(weights: list[float], block: int = MIX_BLOCK) -> list[int]:
    """Whole shares of a block of ``block`` sequences proportional to ``weights`` (largest remainder)."""
    total = sum(weights)
    exact = [block * w / total for w in weights]
    quotas = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - quotas[i], reverse=True)
    for i in by_remainder[: block - sum(quotas)]:
        quotas[i] += 1
    return quotas


class MixedBatches(ResumableBatches):
    """Sequences drawn from several token streams in fixed proportions (see the module docstring)."""

    order_format = ORDER_FORMAT

    def __init__(self, sources: list[TokenWindows], weights: list[float], layout: BatchLayout, seed: int,
                 names: list[str] | None = None) -> None:
        names = names or [f"data.sources[{i}]" for i in range(len(sources))]
        for windows, name in zip(sources, names, strict=True):
            _check_trainable(windows, f"{name}'s training split")
        self.quotas = block_quotas(weights)
        for quota, weight, name in zip(self.quotas, weights, names, strict=True):
            if quota == 0:
                raise UserError(f"{name}: weight {weight} is less than 1/{MIX_BLOCK} of the total; "
                                "it would never be sampled")
        super().__init__(layout, seed)
        self.sources = sources
        self._block, self._slots = -1, np.zeros(0, dtype=np.int64)
        self._reset_orders()

    def _reset_orders(self) -> None:
        self.orders = [EpochPermutation(w.num_windows, [self.seed, _MIX_STREAM, i]) for i, w in enumerate(self.sources)]

    def _block_slots(self, block: int) -> np.ndarray:
        """Source index of each sequence of ``block``: exact quotas, shuffled from ``(seed, block)``."""
        if block != self._block:
            slots = np.repeat(np.arange(len(self.quotas)), self.quotas)
            self._slots = np.random.default_rng([self.seed, _MIX_STREAM, block]).permutation(slots)
            self._block = block
        return self._slots

    def locate(self, k: int) -> tuple[int, int]:
        """(source, index within that source's stream) of global sequence ``k``."""
        block, offset = divmod(k, MIX_BLOCK)
        slots = self._block_slots(block)
        source = int(slots[offset])
        return source, block * self.quotas[source] + int(np.count_nonzero(slots[:offset] == source))

    def _batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        windows = []
        for k in indices:
            source, j = self.locate(k)
            windows.append(self.sources[source].window(self.orders[source][j]))
        return lm_batch(windows)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._block = -1
        self._reset_orders()


def validation_batches(windows: TokenWindows, layout: BatchLayout, max_batches: int) -> list[dict[str, torch.Tensor]]:
    """This rank's share of the first ``max_batches`` micro batches of the held-out split (in order).

    Global micro batch ``g`` holds windows ``[g·b, (g+1)·b)``; rank ``r`` takes ``g = r, r + world,
    …``. The count is rounded down to a multiple of the world size (every rank runs the same number
    of forwards), so the evaluated set is the same for any world size that divides it.
    """
    b, world = layout.micro_batch_size, layout.world_size
    total = min(max_batches, windows.num_windows // b) // world * world
    return [windows.batch(list(range(g * b, (g + 1) * b))) for g in range(layout.rank, total, world)]
