"""The loss sft trains with: cross-entropy at labelled positions only."""

from __future__ import annotations

from typing import Any

from ftp.components import IGNORE_INDEX


def loss_on_labelled_positions(model: Any, inputs: dict[str, Any],
                               num_items_in_batch: Any = None) -> Any:
    """Causal-LM loss that projects onto the vocabulary only where a label is set.

    The LM head and softmax over a 49k vocabulary cost about a fifth of a small model's step,
    and most positions of an SFT batch (system prompt, question) carry no label. With one
    padding-free row, only the positions that predict a labelled token are projected
    (``logits_to_keep``); the loss is the same sum of token cross-entropies, divided by the
    number of labelled tokens in the whole (accumulated) batch, as the model's own loss.
    """
    import torch.nn.functional as F

    inputs = dict(inputs)
    labels = inputs.pop("labels")
    targets_all = labels[:, 1:]
    keep_mask = targets_all != IGNORE_INDEX
    if labels.size(0) == 1:
        keep = keep_mask[0].nonzero().flatten()
        logits = model(**inputs, logits_to_keep=keep).logits[0]
        targets = targets_all[0, keep]
    else:
        logits = model(**inputs).logits[:, :-1][keep_mask]
        targets = targets_all[keep_mask]
    loss = F.cross_entropy(logits.float(), targets, reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else keep_mask.sum()
    return loss / torch_clamp_min(count, 1)


def torch_clamp_min(value: Any, minimum: int) -> Any:
    """``max(value, minimum)`` for a tensor or an int (a batch without labels gives 0 / 1)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.clamp(min=minimum)
    return max(int(value), minimum)
