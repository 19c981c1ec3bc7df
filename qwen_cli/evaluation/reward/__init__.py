"""Preference scoring: reward-model and log-probability accuracy on chosen/rejected pairs, gold
exact match, and the ``qwen rlhf score`` table (report Table 4)."""
