"""Attention backends and fused ops; every fast path has a plain-torch reference beside it."""
