"""The loss sft and cpt train with: cross-entropy at labelled positions only."""

from __future__ import annotations

from typing import Any

from ftp.components import IGNORE_INDEX
from ftp_builtin.methods.chunked_loss import (
    CHUNK,
    PLAIN_HEADS,
    head_returns_hidden,
    linear_cross_entropy_sum,
    plain_head,
)


def loss_on_labelled_positions(model: Any, inputs: dict[str, Any],
                               num_items_in_batch: Any = None, chunked: bool = True) -> Any:
    """Causal-LM loss that projects onto the vocabulary only where a label is set.

    The LM head and softmax over a 49k vocabulary cost about a fifth of a small model's step,
    and most positions of an SFT batch (system prompt, question) carry no label. Only the
    positions that predict a labelled token are projected; the loss is the same sum of token
    cross-entropies, divided by the number of labelled tokens in the whole (accumulated)
    batch, as the model's own loss.

    Args:
        model: The (possibly DDP- or peft-wrapped) causal LM.
        inputs: The collated batch, ``labels`` included.
        num_items_in_batch: Labelled tokens of the whole accumulated batch, if known.
        chunked: Where the model's head is a plain linear layer, project and take the
            cross-entropy a chunk of positions at a time (``chunked_loss``), so the logits
            never exist whole; elsewhere, or when false, the model's own logits at the
            labelled positions (``logits_to_keep`` for one padding-free row).

    """
    import torch.nn.functional as F

    inputs = dict(inputs)
    labels = inputs.pop("labels")
    targets_all = labels[:, 1:]
    keep_mask = targets_all != IGNORE_INDEX
    head = plain_head(model) if chunked else None
    if head is not None:
        keep = keep_mask[0].nonzero().flatten() if labels.size(0) == 1 else 0
        with head_returns_hidden(head):
            hidden = model(**inputs, logits_to_keep=keep).logits
        hidden = hidden[0] if labels.size(0) == 1 else hidden[:, :-1][keep_mask]
        loss = linear_cross_entropy_sum(hidden, head.weight, head.bias, targets_all[keep_mask])
    else:
        if labels.size(0) == 1:
            keep = keep_mask[0].nonzero().flatten()
            logits = model(**inputs, logits_to_keep=keep).logits[0]
        else:
            logits = model(**inputs).logits[:, :-1][keep_mask]
        loss = F.cross_entropy(logits.float(), targets_all[keep_mask], reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else keep_mask.sum()
    return loss / torch_clamp_min(count, 1)


def torch_clamp_min(value: Any, minimum: int) -> Any:
    """``max(value, minimum)`` for a tensor or an int (a batch without labels gives 0 / 1)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.clamp(min=minimum)
    return max(int(value), minimum)


def with_labelled_loss(trainer_class: type) -> type:
    """``trainer_class`` (a transformers Trainer) computing ``loss_on_labelled_positions``.

    Build the trainer, then call ``accepts_loss_kwargs`` on it: the loss is already divided
    by the labelled tokens of the whole accumulated batch.
    """

    class LabelledLossTrainer(trainer_class):
        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            # Only training calls this (neither method evaluates during training), so there
            # are no outputs to return alongside the loss.
            loss = loss_on_labelled_positions(model, inputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients
            return loss

    LabelledLossTrainer.__name__ = f"LabelledLoss{trainer_class.__name__}"
    return LabelledLossTrainer


def accepts_loss_kwargs(trainer: Any) -> Any:
    """Tell Trainer not to divide the loss by the accumulation steps again; return it."""
    trainer.model_accepts_loss_kwargs = True
    return trainer


class ChunkedHead:
    """Mixin for a `ftp.Method` whose loss goes through ``chunked_loss`` where the head allows.

    Tells ``ftp plan`` that a step holds one chunk's logits, not every position's.
    """

    def head_chunk(self, model_type: str) -> int | None:
        """`CHUNK` for families whose head is a plain linear layer applied last, else None."""
        return CHUNK if model_type in PLAIN_HEADS else None
