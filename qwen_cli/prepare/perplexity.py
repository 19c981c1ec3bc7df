"""Model-based quality: perplexity of each document under a reference model in our checkpoint format.

Two steps, because a keep-fraction needs every score before any document can be judged:
:class:`PerplexityScorer` writes ``metadata["perplexity"]`` and one ``scores/<rank>.npy`` per task;
:class:`PerplexityFilter` (a later stage) reads all score files once, sets the threshold to the
``keep_fraction`` quantile (capped by ``max_perplexity`` when set) and keeps documents at or below it.
Perplexity is exp(mean next-token cross-entropy) over the first ``max_tokens`` tokens; a document
of fewer than two tokens cannot be scored and gets +inf (removed by any threshold).
"""

from __future__ import annotations

import math

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter


def document_perplexity(model, tokenizer, text: str, max_tokens: int) -> float:
    """exp(mean cross-entropy) of ``text``'s first ``max_tokens`` tokens under ``model``."""
    import torch

    ids = tokenizer.encode(text)[:max_tokens]
    if len(ids) < 2:
        return math.inf
    with torch.no_grad():
        tokens = torch.tensor([ids])
        logits = model(tokens[:, :-1]).float()
        loss = torch.nn.functional.cross_entropy(logits[0], tokens[0, 1:])
    return float(torch.exp(loss))


class PerplexityScorer(PipelineStep):
    """Scores each document with the checkpoint at ``model_dir``; writes the task's scores to ``scores_folder``."""

    name = "📉 perplexity score"

    def __init__(self, model_dir: str, max_tokens: int, scores_folder: str) -> None:
        super().__init__()
        self.model_dir, self.max_tokens, self.scores_folder = model_dir, max_tokens, scores_folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from qwen_cli.checkpoint import load

        model, tokenizer = load(self.model_dir)
        scores = []
        for doc in data:
            self.stat_update("total")
            with self.track_time():
                score = document_perplexity(model, tokenizer, doc.text, self.max_tokens)
            doc.metadata["perplexity"] = score if math.isfinite(score) else "inf"  # JSON has no inf
            scores.append(score)
            yield doc
        with get_datafolder(self.scores_folder).open(f"{rank:05d}.npy", "wb") as handle:
            np.save(handle, np.asarray(scores, dtype=np.float64))


def threshold(scores: np.ndarray, keep_fraction: float, max_perplexity: float) -> float:
    """The largest perplexity kept: the ``keep_fraction`` quantile of ``scores``, capped at ``max_perplexity``."""
    limit = math.inf
    if keep_fraction < 1 and len(scores):
        limit = float(np.quantile(scores, keep_fraction, method="inverted_cdf"))
    return min(limit, max_perplexity) if max_perplexity > 0 else limit


class PerplexityFilter(BaseFilter):
    """Keeps documents whose ``metadata["perplexity"]`` is at most the run-wide threshold."""

    name = "📉 perplexity filter"

    def __init__(self, scores_folder: str, keep_fraction: float, max_perplexity: float,
                 exclusion_writer=None) -> None:
        super().__init__(exclusion_writer)
        self.scores_folder, self.keep_fraction, self.max_perplexity = scores_folder, keep_fraction, max_perplexity
        self.limit: float | None = None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        folder = get_datafolder(self.scores_folder)
        parts = []
        for name in sorted(folder.list_files(glob_pattern="*.npy")):
            with folder.open(name, "rb") as handle:
                parts.append(np.load(handle))
        self.limit = threshold(np.concatenate(parts) if parts else np.zeros(0), self.keep_fraction,
                               self.max_perplexity)
        yield from super().run(data, rank, world_size)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        score = doc.metadata.get("perplexity")
        score = math.inf if score == "inf" else float(score)
        return True if score <= self.limit else (False, "perplexity")
