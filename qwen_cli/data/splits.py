"""Held-out splits decided by content: the same text lands on the same side in every run and process."""

from __future__ import annotations

import hashlib


def is_heldout(key: str, fraction: float) -> bool:
    """Whether ``key`` (a document, a question) is held out: its SHA-256 falls in the first ``fraction``
    of the hash range, so identical texts are never split across train and held-out."""
    digest = int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8], "big")
    return digest < fraction * 2**64
