"""Cross-entropy through the LM head in chunks: the vocabulary-wide logits never exist whole.

On a 49k-token vocabulary the logits of the labelled positions are the largest tensor of a
small model's step (SmolLM2, a quickstart batch of 1,146 tokens with 790 labelled: 148 MiB
kept for backward, and as much again for the gradient and the softmax while backward runs).
Here the head's projection, the softmax and the gradient with respect to the hidden states
are computed together, a chunk of positions at a time, while the forward pass runs; backward
only scales that stored gradient. The matrix products are the ones the plain path does (the
logits, then the gradient through the head), so the cost is the same and the memory for
logits is one chunk's.

It applies where the model's head is a plain ``nn.Linear`` applied last — checked by model
type (``PLAIN_HEADS``: families whose forward does nothing after the head, no softcapping or
logit scaling) and by the head's class (a LoRA-wrapped head is not plain). Elsewhere callers
keep the model's own logits.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

# Model families whose causal-LM forward ends with ``logits = self.lm_head(hidden)`` and
# nothing after it (transformers 5: no final softcapping, logit scale or vocabulary slicing).
PLAIN_HEADS = frozenset({
    "llama", "mistral", "ministral", "qwen2", "qwen3", "phi3", "olmo", "olmo2", "olmo3",
    "smollm3", "gemma", "starcoder2", "stablelm", "gpt_neox", "helium", "glm4",
})

CHUNK = 1024  # positions a chunk: 1024 x 49k vocabulary x 4 bytes = 192 MiB of logits at most


def _unwrapped(model: Any) -> Any:
    """The transformers model inside DDP / peft wrappers."""
    while hasattr(model, "module") and not hasattr(model, "get_output_embeddings"):
        model = model.module  # DDP
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def plain_head(model: Any) -> Any:
    """The model's LM head when it is a plain linear layer applied last, else None."""
    import torch

    base = _unwrapped(model)
    config = getattr(base, "config", None)
    if getattr(config, "model_type", None) not in PLAIN_HEADS:
        return None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    return head if type(head) is torch.nn.Linear else None


@contextlib.contextmanager
def head_returns_hidden(head: Any) -> Iterator[None]:
    """Within the block, the head passes its input through: the model returns hidden states.

    The model is still called as a whole (through DDP's forward, with its own masks and
    position handling); only the projection onto the vocabulary is left to the caller.
    """
    head.forward = lambda hidden: hidden  # an instance attribute shadows the class's method
    try:
        yield
    finally:
        del head.forward


def linear_cross_entropy_sum(hidden: Any, weight: Any, bias: Any, targets: Any,
                             chunk: int = CHUNK) -> Any:
    """``cross_entropy(hidden @ weight.T + bias, targets, reduction="sum")``, chunk by chunk.

    Args:
        hidden: ``(N, d)`` hidden states of the positions that predict a target.
        weight: ``(V, d)`` the head's weight; its gradient is computed when it requires one.
        bias: ``(V,)`` or None.
        targets: ``(N,)`` token ids.
        chunk: Positions a chunk.

    Returns:
        The summed loss, a scalar whose backward gives ``hidden`` (and ``weight``, ``bias``
        where they require it) their gradients.

    """
    return _function().apply(hidden, weight, bias, targets, chunk)


@functools.cache
def _function() -> Any:
    """The autograd Function, built on first use so that importing this module needs no torch."""
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, bias: Any, targets: Any,
                    chunk: int) -> Any:
            want_w = ctx.needs_input_grad[1]
            want_b = bias is not None and ctx.needs_input_grad[2]
            grad_hidden = torch.empty_like(hidden)
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_w else None
            grad_bias = torch.zeros_like(bias, dtype=torch.float32) if want_b else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for start in range(0, hidden.size(0), chunk):
                h = hidden[start:start + chunk]
                t = targets[start:start + chunk]
                logits = (h @ weight.T).float()
                if bias is not None:
                    logits += bias.float()
                log_z = torch.logsumexp(logits, dim=-1)
                total += (log_z - logits.gather(1, t[:, None]).squeeze(1)).sum()
                # d(sum of losses)/d(logits) = softmax - one_hot, built in place over logits.
                logits.sub_(log_z[:, None]).exp_()
                logits[torch.arange(t.numel(), device=t.device), t] -= 1.0
                grad = logits.to(hidden.dtype)
                grad_hidden[start:start + chunk] = grad @ weight
                if grad_weight is not None:
                    grad_weight += (grad.T @ h).float()
                if grad_bias is not None:
                    grad_bias += logits.sum(0)
            ctx.save_for_backward(grad_hidden,
                                  *(g for g in (grad_weight, grad_bias) if g is not None))
            ctx.want = (want_w, want_b)
            ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
            return total

        @staticmethod
        def backward(ctx: Any, grad_output: Any) -> Any:
            saved = list(ctx.saved_tensors)
            grad_hidden = saved.pop(0)
            grad_hidden = grad_hidden * grad_output.to(grad_hidden.dtype)
            want_w, want_b = ctx.want
            grad_weight = (saved.pop(0) * grad_output).to(ctx.dtypes[0]) if want_w else None
            grad_bias = (saved.pop(0) * grad_output).to(ctx.dtypes[1]) if want_b else None
            return grad_hidden, grad_weight, grad_bias, None, None

    return LinearCrossEntropy
