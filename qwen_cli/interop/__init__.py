"""Hugging Face interop: import released Qwen (v1) and Qwen2-family checkpoints, export ours.

``qwen_cli.interop.convert.convert`` is what ``qwen convert`` runs; ``qwen1`` and ``qwen2``
describe each family's config and tensor layout; ``weights`` streams tensors between them;
``hf_tokenizer`` reads a released Qwen2 ``tokenizer.json`` into our tokenizer.
"""
