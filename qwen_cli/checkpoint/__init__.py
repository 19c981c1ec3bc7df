"""Checkpoint directories: Hugging Face Qwen2 model directories plus training state for exact resume.

``load(dir) -> (model, tokenizer)``, ``load_model(dir)`` and ``save_model(dir, model, tokenizer)``
are the public API (:mod:`qwen_cli.checkpoint.model_dir`). Submodules: ``files`` (names,
checksums, safetensors shards), ``model_dir``, ``train_state`` (optimizer, RNG, data position),
``dcp`` (per-rank sharded checkpoints), ``export`` (a model directory written tensor by tensor),
``streaming`` (tensor-by-tensor conversion) and ``convert`` (``qwen convert``).
"""

from qwen_cli.checkpoint.model_dir import load, load_model, save_model

__all__ = ["load", "load_model", "save_model"]
