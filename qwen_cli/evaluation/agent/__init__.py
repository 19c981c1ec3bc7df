"""The agent benchmarks of ``qwen eval`` (``code-interpreter``, ``tool-use``): ReAct episodes on
the chat model (``qwen_cli.agent``), their scoring, the visualisation judge and offline data."""
