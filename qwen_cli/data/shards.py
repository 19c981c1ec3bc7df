"""Read token shards (``qwen tokenize encode``) as fixed-length training sequences.

Packing happens here, at read time, as in the Qwen report ("documents are shuffled,
concatenated and cut to length"): the shards of a split are memory-mapped and read as one
stream of ids (each document already ends with ``<|endoftext|>``); window ``i`` is ids
``[i·L, i·L + L + 1)`` for sequence length ``L``, giving inputs ``window[:-1]`` and labels
``window[1:]``. There are ``(tokens - 1) // L`` windows; no token is dropped except a tail
shorter than one sequence.

Order: each epoch visits every window once in a permutation drawn from ``(seed, epoch)``.
The *global* sequence index ``k`` maps to window ``perm(k // W)[k % W]``, so the position in
the data is one integer — the number of sequences consumed by finished optimizer steps —
valid for any world size or micro-batch layout. Within a step of ``G`` global sequences,
rank ``r``'s micro batch ``m`` takes global indices ``start + (r·accum + m)·b …`` (``b`` =
micro batch size), so ranks read disjoint slices of the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qwen_cli.data.encode import DTYPE, read_manifest
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
        rows = torch.from_numpy(np.stack([self.window(i) for i in indices]))
        return {"input_ids": rows[:, :-1].contiguous(), "labels": rows[:, 1:].contiguous()}


class ResumableBatches:
    """Iterator of this rank's micro batches whose position is exact between optimizer steps.

    The position is one number — global sequences consumed by finished steps — so it stays
    valid for any world size or micro-batch layout. Subclasses map global sequence indices to
    a batch in ``_batch``.
    """

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
        return {"sequences": self.step_start, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.step_start, self.micro, self.seed = int(state["sequences"]), 0, int(state["seed"])


class ShuffledBatches(ResumableBatches):
    """Windows of the token stream in a fresh permutation every epoch."""

    def __init__(self, windows: TokenWindows, layout: BatchLayout, seed: int) -> None:
        if windows.num_windows == 0:
            raise UserError(f"the training split has {windows.tokens} tokens, fewer than one sequence of "
                            f"{windows.seq_len} + 1 (lower data.seq_len or add data)")
        super().__init__(layout, seed)
        self.windows = windows
        self._perm_epoch, self._perm = -1, np.zeros(0, dtype=np.int64)

    def _window_of(self, k: int) -> int:
        epoch, offset = divmod(k, self.windows.num_windows)
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm, self._perm_epoch = rng.permutation(self.windows.num_windows), epoch
        return int(self._perm[offset])

    def _batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self.windows.batch([self._window_of(k) for k in indices])

    def epoch(self) -> float:
        return self.step_start / self.windows.num_windows


def validation_batches(windows: TokenWindows, layout: BatchLayout, max_batches: int) -> list[dict[str, torch.Tensor]]:
    """This rank's share of the first ``max_batches`` micro batches of the held-out split (in order).

    Global micro batch ``g`` holds windows ``[g·b, (g+1)·b)``; rank ``r`` takes ``g = r, r + world,
    …``. The count is rounded down to a multiple of the world size (every rank runs the same number
    of forwards), so the evaluated set is the same for any world size that divides it.
    """
    b, world = layout.micro_batch_size, layout.world_size
    total = min(max_batches, windows.num_windows // b) // world * world
    return [windows.batch(list(range(g * b, (g + 1) * b))) for g in range(layout.rank, total, world)]
