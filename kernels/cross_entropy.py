"""Fused output projection + cross-entropy for training, with the plain-torch reference.

``linear_cross_entropy(hidden, weight, labels)`` returns the *summed* token cross-entropy of
``hidden @ weight.T`` against ``labels`` (``ignore_index`` rows excluded) and the number of
counted tokens. It never holds the full [tokens, vocab] logits: tokens are processed in
chunks; for each chunk the logits are computed into one reused fp32 buffer, turned in place
into log-probabilities (the loss) and then into ``softmax - onehot``, and immediately
multiplied into the gradients of ``hidden`` and ``weight``, which backward then only scales. That saves the logits' memory and the
separate log-softmax / its backward passes over [tokens, vocab] — with a 152k vocabulary the
output layer is most of a small model's work.

The softmax/cross-entropy step of each chunk has two implementations: plain torch (in-place log-softmax,
then ``exp``) and a Triton kernel (``cross_entropy_triton``: one pass for log Σ exp, one that writes
``softmax - onehot`` straight in the matmul dtype), chosen by ``backend`` like the other fused ops.
Neither waits on the device: ignored rows are zeroed by the kernel, or in torch by masking the [C, H]
side of the gradient matmuls (no test of "are all rows counted?" per chunk).

Chunk size (``chunk = 0``, the default): on CUDA the fastest of :data:`TUNE_CHUNKS` for this shape and
GPU, measured once per process on the call's own inputs (:func:`tuned_chunk`): more tokens per chunk
mean fewer passes over the [V, H] weight gradient, fewer mean less memory, and which wins depends on
the GPU (at 16,384 × 2048 × 151,936 a 441-token chunk made the loss 1.76× slower than full logits on
an H200); elsewhere sized from the vocabulary (:func:`auto_chunk`).

Under autocast the matmuls run in the autocast dtype (bf16) and the softmax in fp32, like
the reference under autocast — except on CPUs without native bf16 matmuls (AVX2-only), where
bf16 GEMMs are emulated and several times slower than fp32: there the projection stays fp32. The matmuls happen in forward, so call it only when the loss
will be backpropagated (or under ``torch.no_grad`` for evaluation, which skips them).
"""

from __future__ import annotations

import functools
import time

import torch
import torch.nn.functional as F

from .dispatch import use_triton

IGNORE_INDEX = -100
CHUNK_BYTES = 1 << 28  # fp32 logits per chunk off CUDA
TUNE_CHUNKS = (1024, 2048, 4096, 8192)  # tokens per chunk tried on CUDA (see tuned_chunk)


def auto_chunk(vocab_size: int) -> int:
    """Tokens per chunk so that one chunk's fp32 logits take about ``CHUNK_BYTES``."""
    return max(64, CHUNK_BYTES // (4 * vocab_size))


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 / AMX) rather than emulating it."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _matmul_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The autocast dtype, except bf16 on a CPU that only emulates it: fp32 is faster there."""
    if not torch.is_autocast_enabled(device.type):
        return dtype
    autocast_dtype = torch.get_autocast_dtype(device.type)
    if device.type == "cpu" and autocast_dtype == torch.bfloat16 and not cpu_has_native_bf16():
        return torch.float32
    return autocast_dtype


def _torch_chunk(logits, y, ignore_index, with_grad):
    """(summed loss, ``softmax − onehot`` or None, rows to keep [C, 1]) of one chunk's fp32 logits, in place.

    Ignored rows are not zeroed here (finding them would wait on the device, and zeroing them all costs a
    pass over [C, V]): the caller multiplies by the keep mask on the [C, H] side of the gradient matmuls.
    """
    if logits.device.type == "cpu":  # in place: the CPU kernel finishes a row's max/sum first
        torch._log_softmax(logits, -1, False, out=logits)
    else:
        logits = torch.log_softmax(logits, dim=-1)
    valid = y != ignore_index
    target = y.clamp(min=0)
    loss = -torch.where(valid, logits.gather(1, target[:, None]).squeeze(1), 0.0).sum()
    if not with_grad:
        return loss, None, None
    probs = logits.exp_()  # d(loss)/d(logits) = softmax - onehot
    probs[torch.arange(len(y), device=y.device), target] -= 1.0
    return loss, probs, valid[:, None]


def _chunked(hidden, weight, labels, chunk, ignore_index, use_triton, need_h, need_w):
    """(summed loss, grad of hidden or None, fp32 grad of weight or None), ``chunk`` tokens at a time."""
    mm_dtype = _matmul_dtype(hidden.device, weight.dtype)
    n_tokens = hidden.shape[0]
    chunk = -(-n_tokens // max(1, -(-n_tokens // chunk)))  # equal chunks, none much smaller
    with torch.autocast(hidden.device.type, enabled=False):
        h, w = hidden.to(mm_dtype), weight.to(mm_dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        with_grad = need_h or need_w
        rows = min(chunk, n_tokens)
        buffer = torch.empty(rows, w.shape[0], dtype=torch.float32, device=h.device)
        # the Triton kernel writes the logit gradient straight in the matmul dtype (over the logits if fp32)
        grad_buffer = buffer if mm_dtype == torch.float32 or not (use_triton and with_grad) else \
            torch.empty(rows, w.shape[0], dtype=mm_dtype, device=h.device)
        for start in range(0, n_tokens, chunk):
            h_c, y = h[start : start + chunk], labels[start : start + chunk]
            logits = buffer[: len(y)]
            if mm_dtype == torch.float32:
                torch.mm(h_c, w.T, out=logits)
            else:
                logits.copy_(h_c @ w.T)
            if use_triton:
                from .cross_entropy_triton import cross_entropy_chunk

                g, keep = (grad_buffer[: len(y)] if with_grad else None), None
                total += cross_entropy_chunk(logits, y, ignore_index, g).sum()
            else:
                loss, g, keep = _torch_chunk(logits, y, ignore_index, with_grad)
                total += loss
                if g is not None and mm_dtype != torch.float32:
                    g = g.to(mm_dtype)
            if not with_grad:
                continue
            if grad_h is not None:
                torch.mm(g, w, out=grad_h[start : start + chunk])
                if keep is not None:
                    grad_h[start : start + chunk].mul_(keep)
            if grad_w is not None:
                h_kept = h_c if keep is None else h_c * keep
                if mm_dtype == torch.float32:
                    grad_w.addmm_(g.T, h_kept)
                else:
                    grad_w += (g.T @ h_kept).float()
    return total, grad_h, grad_w


_TUNED: dict[tuple, int] = {}


def tuned_chunk(n_tokens: int, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                use_triton: bool, need_h: bool, need_w: bool) -> int:
    """Tokens per chunk for this call: on CUDA the fastest of :data:`TUNE_CHUNKS` (that fit ``n_tokens``),
    measured once per (device, shape, dtype, kernel, gradients) on the call's own inputs; else :func:`auto_chunk`.

    Bigger chunks mean fewer passes over the [V, H] weight gradient (each chunk adds its product into the
    fp32 accumulator), smaller ones less memory: which wins depends on the GPU, so it is measured.
    """
    vocab = weight.shape[0]
    if not hidden.is_cuda:
        return auto_chunk(vocab)
    candidates = sorted({min(c, n_tokens) for c in TUNE_CHUNKS})
    key = (hidden.device.index, n_tokens, hidden.shape[1], vocab, hidden.dtype, weight.dtype,
           torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None,
           use_triton, need_h, need_w)
    if key not in _TUNED:
        seconds = {}
        for chunk in candidates:
            args = (hidden.detach(), weight.detach(), labels, chunk, IGNORE_INDEX, use_triton, need_h, need_w)
            _chunked(*args)  # warm-up (Triton compiles on its first call)
            torch.cuda.synchronize(hidden.device)
            start = time.perf_counter()
            _chunked(*args)
            torch.cuda.synchronize(hidden.device)
            seconds[chunk] = time.perf_counter() - start
        _TUNED[key] = min(seconds, key=seconds.get)
    return _TUNED[key]


def tuned_chunks() -> dict[tuple, int]:
    """What :func:`tuned_chunk` chose so far, by its key (for benchmarks' reports)."""
    return dict(_TUNED)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk, ignore_index, use_triton):
        total, grad_h, grad_w = _chunked(hidden, weight, labels, chunk, ignore_index, use_triton,
                                         ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        ctx.save_for_backward(grad_h.to(hidden.dtype) if grad_h is not None else None,
                              grad_w.to(weight.dtype) if grad_w is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        # the gradients were computed in forward; scale them in place (this graph runs backward once)
        grad_h, grad_w = ctx.saved_tensors
        return (
            grad_h.mul_(grad_out.to(grad_h.dtype)) if grad_h is not None else None,
            grad_w.mul_(grad_out.to(grad_w.dtype)) if grad_w is not None else None,
            None, None, None, None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int = 0,
    ignore_index: int = IGNORE_INDEX, backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, counted tokens) of ``hidden [..., H] @ weight[V, H].T`` vs ``labels [...]``;
    the softmax part runs the Triton kernel or plain torch per ``backend`` (see ``kernels.dispatch``)."""
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    flat_y = labels.reshape(-1)
    fast = use_triton(backend, flat_h)
    grads = torch.is_grad_enabled()
    chunk = chunk or tuned_chunk(flat_h.shape[0], flat_h, weight, flat_y, fast,
                                 grads and flat_h.requires_grad, grads and weight.requires_grad)
    loss = _LinearCrossEntropy.apply(flat_h, weight, flat_y, chunk, ignore_index, fast)
    return loss, (flat_y != ignore_index).sum()


def reference_linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch: full logits, fp32 cross-entropy summed over the counted tokens."""
    logits = (hidden @ weight.T).float()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=ignore_index, reduction="sum")
    return loss, (labels != ignore_index).sum()
