"""The lm-eval harness side of ``qwen eval``: our model as an lm-eval model, benchmark data found
offline, the paper's task definitions and shot counts, answer scoring, pass@k, and the report."""
