"""Gated SiLU MLPs (the Llama family's) that keep two tensors for backward instead of three.

``down_proj(silu(gate_proj(x)) * up_proj(x))`` run by autograd keeps the gate's output (for
SiLU's backward), SiLU's output and the up projection's output (for the product's): three
tensors of the MLP's intermediate width per token and layer, the largest share of what a
small model's step keeps (benchmarks/memory_profile.py: 604 of 1,474 MiB on SmolLM2 at 1,146
tokens). The product's backward can recompute SiLU from the gate's output, an elementwise
pass, so here the gate and up outputs are kept and SiLU's output is not: a third less for the
MLP, the same gradients.

`lean_gated_mlps` swaps the forward of each module whose forward is exactly that expression
(checked from the names its code reads, with a SiLU activation) for the duration of training
and puts the class's own back afterwards. Other MLPs (GELU, fused gate-up projections,
dropout) are left alone.

Nothing here imports torch at module import.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Iterator
from typing import Any

# The names a plain gated MLP's forward reads, and nothing else: Llama, Mistral, Qwen2/3, ...
_GATED_FORWARD_NAMES = frozenset({"down_proj", "act_fn", "gate_proj", "up_proj"})


@functools.cache
def _silu_mul() -> Any:
    import torch

    class SiluMul(torch.autograd.Function):
        """``silu(gate) * up``, keeping only ``gate`` and ``up`` for backward."""

        @staticmethod
        def forward(ctx: Any, gate: Any, up: Any) -> Any:
            ctx.save_for_backward(gate, up)
            return torch.nn.functional.silu(gate) * up

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            gate, up = ctx.saved_tensors
            # torch's own fused SiLU backward: one pass where the derivative written out as
            # tensor arithmetic took six, each a full MLP-wide temporary.
            grad_gate = torch.ops.aten.silu_backward(grad * up, gate)
            return grad_gate, grad * torch.nn.functional.silu(gate)

    return SiluMul  # built on first use: torch is not imported with this module


def silu_mul(gate: Any, up: Any) -> Any:
    """``silu(gate) * up`` whose backward keeps ``gate`` and ``up`` only."""
    return _silu_mul().apply(gate, up)


def is_plain_gated_silu(module: Any) -> bool:
    """Whether ``module.forward`` is ``down_proj(act_fn(gate_proj(x)) * up_proj(x))`` with SiLU."""
    import torch

    forward = getattr(type(module), "forward", None)
    code = getattr(forward, "__code__", None)
    if code is None or frozenset(code.co_names) != _GATED_FORWARD_NAMES:
        return False
    act = getattr(module, "act_fn", None)
    return isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation"


def _lean_forward(self: Any, x: Any) -> Any:
    return self.down_proj(silu_mul(self.gate_proj(x), self.up_proj(x)))


@contextlib.contextmanager
def lean_gated_mlps(model: Any) -> Iterator[int]:
    """Within the block, plain gated SiLU MLPs keep two tensors for backward; yields how many.

    Args:
        model: Any torch module (peft- or otherwise wrapped models too).

    """
    swapped = [m for m in model.modules() if is_plain_gated_silu(m)]
    for m in swapped:
        # An instance attribute shadows the class's method. Bound, not a closure: a deep copy
        # of the model (a reference model) then calls its own weights, not these.
        m.forward = types.MethodType(_lean_forward, m)
    try:
        yield len(swapped)
    finally:
        for m in swapped:
            del m.forward
