"""Evaluation: the lm-eval model adapter, benchmark data registry, task definitions, sandboxed code
execution with pass@k, and the results report behind ``qwen eval``."""
