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
                             chunk: int | None = None) -> Any:
    """``cross_entropy(hidden @ weight.T + bias, targets, reduction="sum")``, chunk by chunk.

    Args:
        hidden: ``(N, d)`` hidden states of the positions that predict a target.
        weight: ``(V, d)`` the head's weight; its gradient is computed when it requires one.
        bias: ``(V,)`` or None.
        targets: ``(N,)`` token ids.
        chunk: Positions a chunk; None: ``CHUNK``, read at call time.

    Returns:
        The summed loss, a scalar whose backward gives ``hidden`` (and ``weight``, ``bias``
        where they require it) their gradients.

    """
    return _functions()[0].apply(hidden, weight, bias, targets,
                                 CHUNK if chunk is None else chunk)


def linear_log_probs(hidden: Any, weight: Any, bias: Any, targets: Any,
                     chunk: int | None = None, stats: bool = False) -> tuple[Any, Any, Any, Any]:
    """``log_softmax(hidden @ weight.T + bias)`` at each ``targets`` token, chunk by chunk.

    What the preference losses need: one log-probability a position, each with its own
    gradient from the loss (so, unlike `linear_cross_entropy_sum`, the gradient through the
    head is not known in the forward pass). Where only ``hidden`` needs a gradient (a frozen
    head, as under LoRA) the forward pass computes ``d log p / d hidden`` a chunk at a time
    and backward only scales it: the same two products as the plain path. Where the head's
    weight or bias trains too, backward recomputes each chunk's logits from the hidden states
    and ``log Z`` it kept (one projection more than the plain path, no logits kept).

    Args:
        hidden: ``(N, d)`` hidden states of the positions that predict a target.
        weight: ``(V, d)`` the head's weight.
        bias: ``(V,)`` or None.
        targets: ``(N,)`` token ids.
        chunk: Positions a chunk; None: ``CHUNK``, read at call time.
        stats: Also return, without gradient, each position's entropy, mean logit over the
            vocabulary and whether the target is the most likely token (the first of equals).

    Returns:
        ``(log_probs, entropy, mean_logits, is_top1)``: float32 ``(N,)`` tensors; the last
        three are None unless ``stats``.

    """
    import torch

    chunk = CHUNK if chunk is None else chunk
    if not torch.is_grad_enabled() or not any(
            t is not None and t.requires_grad for t in (hidden, weight, bias)):
        out = _log_prob_chunks(hidden, weight, bias, targets, chunk, stats, False)
        return out[0], *out[2]
    log_probs, entropy, mean_logits, is_top1 = _functions()[1].apply(
        hidden, weight, bias, targets, chunk, stats)
    if not stats:
        return log_probs, None, None, None
    return log_probs, entropy, mean_logits, is_top1


def _logits(hidden: Any, weight: Any, bias: Any) -> Any:
    """One chunk's logits, in float32."""
    logits = (hidden @ weight.T).float()
    if bias is not None:
        logits += bias.float()
    return logits


def _softmax_minus_one_hot_(logits: Any, log_z: Any, targets: Any) -> Any:
    """``softmax(logits) - one_hot(targets)``, built in place over ``logits``.

    The gradient of ``-log p(target)`` with respect to the logits; returned for chaining.
    """
    return _minus_one_hot_(logits.sub_(log_z[:, None]).exp_(), targets)


def _minus_one_hot_(probs: Any, targets: Any) -> Any:
    """``probs - one_hot(targets)``, in place over ``probs``; returned for chaining."""
    import torch

    probs[torch.arange(targets.numel(), device=targets.device), targets] -= 1.0
    return probs


def _through_head(grad: Any, hidden: Any, weight: Any, grad_weight: Any, grad_bias: Any,
                  want_hidden: bool = True) -> Any:
    """The gradient ``grad`` of a chunk's logits carried through the head.

    Adds the head's weight and bias gradients to ``grad_weight`` / ``grad_bias`` (float32
    accumulators, or None where not wanted); returns the gradient of the hidden states (None
    unless ``want_hidden``).
    """
    low = grad.to(hidden.dtype)
    if grad_weight is not None:
        grad_weight += (low.T @ hidden).float()
    if grad_bias is not None:
        grad_bias += grad.sum(0)
    return low @ weight if want_hidden else None


def _log_prob_chunks(hidden: Any, weight: Any, bias: Any, targets: Any, chunk: int,
                     stats: bool, want_hidden_grad: bool) -> tuple[Any, Any, tuple[Any, ...], Any]:
    """The forward pass of `linear_log_probs`.

    Returns ``(log_probs, log_z, (entropy, mean_logits, is_top1) or three Nones,
    d log_probs / d hidden or None)``.
    """
    import torch

    n = hidden.size(0)
    f32 = {"dtype": torch.float32, "device": hidden.device}
    log_probs, log_z = torch.empty(n, **f32), torch.empty(n, **f32)
    entropy: Any = torch.empty(n, **f32) if stats else None
    mean_logits: Any = torch.empty(n, **f32) if stats else None
    is_top1: Any = torch.empty(n, dtype=torch.bool, device=hidden.device) if stats else None
    grad_hidden = torch.empty_like(hidden) if want_hidden_grad else None
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        h, t = hidden[part], targets[part]
        logits = _logits(h, weight, bias)
        grad: Any = None
        z = torch.logsumexp(logits, dim=-1)
        log_z[part] = z
        log_probs[part] = logits.gather(1, t[:, None]).squeeze(1) - z
        if stats:
            mean_logits[part] = logits.mean(-1)
            is_top1[part] = logits.argmax(-1) == t  # the first of equal maxima, as TRL's
            log_p = logits.sub_(z[:, None])  # in place: one more chunk-sized tensor, not two
            probs = log_p.exp()
            # -sum(p log p) as a batched dot product: no chunk-sized product tensor.
            entropy[part] = -(probs[:, None, :] @ log_p[:, :, None]).flatten()
            grad = _minus_one_hot_(probs, t) if grad_hidden is not None else None
        elif grad_hidden is not None:
            grad = _softmax_minus_one_hot_(logits, z, t)
        if grad_hidden is not None:
            # d log p / d logits = one_hot - softmax: the negated cross-entropy gradient.
            grad_hidden[part] = _through_head(grad.neg_(), h, weight, None, None)
    return log_probs, log_z, (entropy, mean_logits, is_top1), grad_hidden


@functools.cache
def _functions() -> tuple[Any, Any]:
    """The autograd Functions, built on first use so that importing this module needs no torch."""
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
                logits = _logits(h, weight, bias)
                log_z = torch.logsumexp(logits, dim=-1)
                total += (log_z - logits.gather(1, t[:, None]).squeeze(1)).sum()
                # The loss is a plain sum: its gradient through the head is known already.
                grad = _softmax_minus_one_hot_(logits, log_z, t)
                grad_hidden[start:start + chunk] = _through_head(grad, h, weight,
                                                                 grad_weight, grad_bias)
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

    class LinearLogProbs(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, bias: Any, targets: Any, chunk: int,
                    stats: bool) -> Any:
            want_w = ctx.needs_input_grad[1]
            want_b = bias is not None and ctx.needs_input_grad[2]
            # A frozen head: d log p / d hidden now, a chunk at a time; else recompute later.
            early = not (want_w or want_b)
            log_probs, log_z, extra, grad_hidden = _log_prob_chunks(
                hidden, weight, bias, targets, chunk, stats, early and ctx.needs_input_grad[0])
            ctx.early = early
            ctx.chunk = chunk
            ctx.want = (ctx.needs_input_grad[0], want_w, want_b)
            if early:
                ctx.save_for_backward(grad_hidden)
            else:
                ctx.save_for_backward(hidden, weight, bias, targets, log_z)
            ctx.mark_non_differentiable(*(t for t in extra if t is not None))
            return log_probs, *extra

        @staticmethod
        def backward(ctx: Any, grad_log_probs: Any, *_: Any) -> Any:
            nothing = (None, None, None)  # targets, chunk, stats
            if ctx.early:
                (grad_hidden,) = ctx.saved_tensors
                if grad_hidden is None:
                    return None, None, None, *nothing
                return grad_hidden * grad_log_probs[:, None].to(grad_hidden.dtype), None, None, \
                    *nothing
            hidden, weight, bias, targets, log_z = ctx.saved_tensors
            want_h, want_w, want_b = ctx.want
            grad_hidden = torch.empty_like(hidden) if want_h else None
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_w else None
            grad_bias = torch.zeros_like(bias, dtype=torch.float32) if want_b else None
            chunk = ctx.chunk
            for start in range(0, hidden.size(0), chunk):
                part = slice(start, start + chunk)
                h, t = hidden[part], targets[part]
                logits = _logits(h, weight, bias)
                # d(g * log p)/d logits = -g * (softmax - one_hot)
                grad = _softmax_minus_one_hot_(logits, log_z[part], t)
                grad.mul_(-grad_log_probs[part, None].float())
                g_h = _through_head(grad, h, weight, grad_weight, grad_bias, want_h)
                if grad_hidden is not None:
                    grad_hidden[part] = g_h
            return (grad_hidden,
                    None if grad_weight is None else grad_weight.to(weight.dtype),
                    None if grad_bias is None else grad_bias.to(bias.dtype),
                    *nothing)

    return LinearCrossEntropy, LinearLogProbs
