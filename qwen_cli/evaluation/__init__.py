"""Evaluation, one subpackage per concern; ``runner`` (``qwen eval``) joins the first two.

- ``harness/``: the lm-eval model adapter, benchmark data registry, task definitions, scoring,
  pass@k and the results report (the report's base-model benchmarks);
- ``agent/``: the agent benchmarks (code interpreter, tool use, visualisation judge) run as
  ReAct episodes, with their offline data;
- ``long_context/``: ``qwen extend-context`` and its perplexity sweep (report Table 3);
- ``reward/``: preference-pair scoring and ``qwen rlhf score`` (report Table 4);
- ``progress``: the progress bars and warnings every ``qwen eval`` task shares.
"""
