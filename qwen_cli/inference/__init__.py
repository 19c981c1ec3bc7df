"""Inference: the generation engine (KV cache, sampling, stop rules) and the chat session built on it.

``generate`` is shared by ``qwen chat``, the generative tasks of ``qwen eval``, the pretraining
and SFT samples and (later) PPO rollouts; ``chat_session`` holds a conversation, its context
window and the terminal/pipe loop of ``qwen chat``.
"""
