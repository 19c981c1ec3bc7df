"""qwen_cli: reproduce the Qwen (v1) model lineage — tokenize, pretrain, sft, eval, chat, convert.

``qwen_cli.load(ckpt_dir, device="cpu", dtype=None) -> (model, tokenizer)`` is the Python entry
point for scripts; everything else is reached through the ``qwen`` command.
"""

__version__ = "0.1.0"


def load(ckpt_dir, device="cpu", dtype=None):
    """Load a checkpoint directory: returns ``(model, tokenizer)``."""
    from qwen_cli.checkpoint import load as _load

    return _load(ckpt_dir, device=device, dtype=dtype)
