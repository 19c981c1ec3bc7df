"""Seeded permutations of ``[0, N)`` in O(1) memory: the per-epoch order of training windows.

A pretraining corpus of 2.2T tokens cut into 2048-token windows has ≈ 10⁹ windows; holding a
permutation of them (8 bytes each) costs ≈ 8.6 GB per process. Here the permutation is a
*function*: :class:`KeyedPermutation` maps an offset to a window in a few dozen integer operations,
for any ``N`` (≥ 1), from a key alone, so any position of any epoch is reached in O(1) time and
memory — exact resume needs only the position.

Construction: a balanced Feistel network on ``2h``-bit integers (``4^h`` is the smallest power of
four ≥ ``N``, ``h`` ≥ 1), :data:`ROUNDS` rounds, each ``L, R ← R, L ⊕ F(R ⊕ kᵢ)`` with ``F`` the
SplitMix64 finaliser truncated to ``h`` bits and round keys ``kᵢ`` drawn from
``numpy.random.SeedSequence(key)``. A Feistel network is a bijection of ``[0, 4^h)`` whatever ``F``
is; *cycle-walking* (Black & Rogaway 2002) turns it into one of ``[0, N)``: an output ≥ ``N`` is
encrypted again until it lands below ``N``. Since ``4^h < 4N``, fewer than four walks are needed on
average.

Why this rather than a block-wise shuffle (permute blocks of consecutive windows, then within a
block): a block-wise order puts windows of the same block — neighbouring documents, usually of the
same source file — into the same or adjacent global batches, so a batch is a sample of a few
regions of the corpus rather than of the whole corpus, and its quality depends on the block size.
Its only gain is locality, and a window already is one contiguous read of ``seq_len + 1`` tokens
(8 KiB at 2048 tokens) from a memory-mapped shard, so a random window costs one or two page reads
either way. The Feistel order is a full shuffle of the epoch at no memory at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ROUNDS = 8
FORMAT = "feistel-8"  # names this order in saved data positions: a different order cannot resume one
_C1, _C2, _M64 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, (1 << 64) - 1

Word = int | np.ndarray  # one Python int, or a uint64 array: the same arithmetic serves both


def _mix(x: Word) -> Word:
    """SplitMix64's finaliser: a bijective avalanche of 64-bit words (the mask only matters for ints)."""
    x = ((x ^ (x >> 30)) * _C1) & _M64
    x = ((x ^ (x >> 27)) * _C2) & _M64
    return x ^ (x >> 31)


class KeyedPermutation:
    """A bijection of ``[0, n)`` chosen by ``key`` (a list of non-negative ints), evaluated on demand."""

    def __init__(self, n: int, key: Sequence[int]) -> None:
        if n < 1:
            raise ValueError(f"a permutation needs n >= 1, got {n}")
        if n > 1 << 62:
            raise ValueError(f"n = {n} exceeds 2**62")
        self.n = n
        self.half = max(1, ((n - 1).bit_length() + 1) // 2)
        self.mask = (1 << self.half) - 1
        self.keys = [int(k) for k in np.random.SeedSequence(list(key)).generate_state(ROUNDS, dtype=np.uint64)]

    def _encrypt(self, x: Word) -> Word:
        left, right = x >> self.half, x & self.mask
        for k in self.keys:
            left, right = right, left ^ (_mix(right ^ k) & self.mask)
        return (left << self.half) | right

    def __getitem__(self, offset: int) -> int:
        """The image of one offset in ``[0, n)`` (plain integer arithmetic: no array overhead)."""
        x = self._encrypt(offset)
        while x >= self.n:
            x = self._encrypt(x)
        return x

    def __call__(self, offsets: np.ndarray | Sequence[int]) -> np.ndarray:
        """The images of ``offsets`` (each in ``[0, n)``) as int64."""
        x = self._encrypt(np.asarray(offsets, dtype=np.uint64))
        outside = np.flatnonzero(x >= self.n)
        while outside.size:  # cycle-walking: re-encrypt what fell outside [0, n)
            x[outside] = self._encrypt(x[outside])
            outside = outside[x[outside] >= self.n]
        return x.astype(np.int64)


class EpochPermutation:
    """Item ``k`` of an endless stream that visits all ``count`` items once per epoch, each epoch in its
    own :class:`KeyedPermutation` keyed by ``(*key, epoch)``; O(1) memory for any ``count``."""

    def __init__(self, count: int, key: Sequence[int]) -> None:
        self.count, self.key = count, list(key)
        self._cached: tuple[int, KeyedPermutation] | None = None

    def epoch(self, epoch: int) -> KeyedPermutation:
        """The permutation of epoch ``epoch`` (the last one used is kept)."""
        if self._cached is None or self._cached[0] != epoch:
            self._cached = epoch, KeyedPermutation(self.count, [*self.key, epoch])
        return self._cached[1]

    def __getitem__(self, k: int) -> int:
        epoch, offset = divmod(int(k), self.count)
        return self.epoch(epoch)[offset]
