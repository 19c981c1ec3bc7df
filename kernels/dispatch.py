"""Which implementation of a fused op runs: the Triton kernel or its plain-torch reference.

``backend`` is the model's ``kernels`` key (``[model] kernels`` in a recipe):
  ``auto``   — Triton on CUDA tensors when the ``triton`` package is installed, else plain torch; and
               plain torch inside ``torch.compile`` (``train.compile``, the compiled decode step), where
               inductor fuses the reference with its neighbours (the residual add before a norm, the
               projections around rotary and SwiGLU), which an opaque Triton call would prevent; the
               GPU ablation (``bench/bench_gpu.py``: "auto +compile" vs "all fused ops +compile") measures it;
  ``triton`` — always Triton: on CUDA, or on CPU under ``TRITON_INTERPRET=1`` (Triton's interpreter,
               which the tests use; slow, for checking only);
  ``torch``  — always the plain-torch reference.

Triton itself is imported only when a kernel first runs (the ``*_triton`` modules), so the torch path
never pays for it and ``TRITON_INTERPRET`` can still be set before it is imported.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from qwen_cli.errors import UserError

KERNELS = ("auto", "triton", "torch")
TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(backend: str, x: torch.Tensor) -> bool:
    """Whether ``x``'s op runs the Triton kernel under ``backend`` (see the module docstring)."""
    if backend == "torch":
        return False
    if backend == "auto":
        return TRITON_INSTALLED and x.is_cuda and not torch.compiler.is_compiling()
    if backend != "triton":
        raise ValueError(f"unknown kernels backend {backend!r}; choose one of {', '.join(KERNELS)}")
    if not TRITON_INSTALLED:
        raise UserError("model.kernels = 'triton' needs the triton package (pip install 'qwen-cli[gpu]'), "
                        "or set kernels = 'auto'")
    if not x.is_cuda and not interpreting():
        raise UserError(f"model.kernels = 'triton' needs a CUDA device (tensors are on {x.device}); set "
                        "TRITON_INTERPRET=1 to run the kernels in Triton's CPU interpreter, or kernels = 'auto'")
    return True
