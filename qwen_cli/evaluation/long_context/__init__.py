"""``qwen extend-context``: training-free context extension and its perplexity sweep (report §2.5)."""
