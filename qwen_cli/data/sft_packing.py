"""SFT batches: rendered conversations packed (or padded) into rows with next-token targets.

Batching: ``pack`` places conversations into rows of ``seq_len`` tokens (first fit) with
``segment_ids``, so attention never crosses conversations and positions restart per
conversation; ``pad`` puts one conversation per row, right-padded to the longest in the batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

import torch

from qwen_cli.data.chat_template import Sample

IGNORE_INDEX = -100


def pack(lengths: Sequence[int], seq_len: int, order: Sequence[int], open_rows: int = 64) -> list[list[int]]:
    """Group sample indices (taken in ``order``) into rows of at most ``seq_len`` tokens.

    First fit over the last ``open_rows`` rows still open (a bounded window keeps it linear and
    keeps rows close to the shuffled order); rows are returned in the order they were opened.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    first_open = 0
    for index in order:
        n = lengths[index]
        target = next((r for r in range(first_open, len(rows)) if room[r] >= n), None)
        if target is None:
            rows.append([])
            room.append(seq_len)
            target = len(rows) - 1
            first_open = max(first_open, len(rows) - open_rows)
        rows[target].append(index)
        room[target] -= n
    return rows


def targets_of(sample: Sample) -> list[int]:
    """Next-token targets: position i predicts token i+1 when that token is supervised."""
    ids, sup = sample.ids, sample.supervised
    return [ids[i + 1] if sup[i + 1] else IGNORE_INDEX for i in range(len(ids) - 1)] + [IGNORE_INDEX]


def collate(samples: Sequence[Sample], rows: Sequence[Sequence[int]], width: int,
            pad_id: int = 0, segments: bool = True) -> dict[str, torch.Tensor]:
    """Tensors for ``rows`` (lists of sample indices) right-padded to ``width`` tokens.

    ``input_ids`` and ``labels`` [B, width] (next-token targets, ``IGNORE_INDEX`` where nothing is
    predicted); with ``segments``, ``segment_ids`` numbers the conversations of each row 1, 2, …
    and padding 0, so the model masks attention between them and restarts positions.
    """
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    segment_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for seg, index in enumerate(row, 1):
            sample = samples[index]
            end = start + len(sample.ids)
            ids[r, start:end] = torch.tensor(sample.ids)
            targets[r, start:end] = torch.tensor(targets_of(sample))
            segment_ids[r, start:end] = seg
            start = end
    batch = {"input_ids": ids, "labels": targets}
    if segments:
        batch["segment_ids"] = segment_ids
    return batch


def epoch_rows(samples: Sequence[Sample], seq_len: int, mode: Literal["pack", "pad"], seed: int) -> list[list[int]]:
    """One epoch's rows of sample indices in a seeded shuffled order (packed or one per row)."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    if mode == "pad":
        return [[i] for i in order]
    return pack([len(s.ids) for s in samples], seq_len, order)


def padding_fraction(samples: Sequence[Sample], rows: Sequence[Sequence[int]], widths: Sequence[int]) -> float:
    """Share of padding tokens when ``rows`` are laid out with the given per-row widths."""
    real = sum(len(samples[i].ids) for row in rows for i in row)
    total = sum(widths)
    return 1.0 - real / total if total else 0.0
