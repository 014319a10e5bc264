"""Scoring labelled tokens in forward passes whose logits fit a bounded budget.

The ``loss``, ``perplexity`` and ``preference`` evaluators all need the same number: for each
row, the summed log-probability of its labelled tokens given what precedes them. Computing it
naively (a whole batch's logits, every position, then a float copy) costs
``rows x length x vocabulary x 4`` bytes — 800 MB for eight 512-token blocks of SmolLM2's
49,152-token vocabulary, which made the perplexity evaluation the peak of a whole run.

Here rows are grouped by length, and a group's forward pass projects onto the vocabulary only
the positions from its first labelled one onwards (the model's own ``logits_to_keep``: the
hidden states of the other positions never meet ``lm_head``); a group holds as many rows as
keep those logits under `LOGITS_BUDGET` bytes (at least one row, at most ``max_rows``). Each
row's log-probabilities are then taken from its own slice of the logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ftp import IGNORE_INDEX

LOGITS_BUDGET = 256 * 2**20
"""The most bytes of float32 logits one forward pass computes (one row's may exceed it)."""


@dataclass(frozen=True)
class Scored:
    """One row's score.

    Attributes:
        logp: Sum of the log-probabilities of the row's labelled tokens.
        tokens: How many labelled tokens there are (the first position never counts: nothing
            predicts it).

    """

    logp: float
    tokens: int


def labelled_positions(labels: Sequence[int]) -> list[int]:
    """Positions ``p >= 1`` whose label is scored (the logits at ``p - 1`` predict them)."""
    return [p for p in range(1, len(labels)) if labels[p] != IGNORE_INDEX]


def groups(rows: Sequence[Mapping[str, Sequence[int]]], vocab: int, max_rows: int,
           budget: int = LOGITS_BUDGET) -> list[list[int]]:
    """Indices of ``rows`` grouped for forward passes: by length, logits under ``budget``.

    Rows without a labelled token are left out. A group's kept logits are
    ``len(group) x (longest - first labelled position + 1) x vocab`` float32 values.
    """
    firsts = {}
    for j, r in enumerate(rows):
        where = labelled_positions(r["labels"])
        if where:
            firsts[j] = where[0] - 1
    order = sorted(firsts, key=lambda j: len(rows[j]["input_ids"]))
    out: list[list[int]] = []
    current: list[int] = []
    for j in order:
        trial = [*current, j]
        width = len(rows[j]["input_ids"])  # the longest so far: rows come sorted by length
        keep = width - min(firsts[k] for k in trial)
        if current and (len(trial) > max_rows or len(trial) * keep * vocab * 4 > budget):
            out.append(current)
            trial = [j]
        current = trial
    if current:
        out.append(current)
    return out


def score_rows(model: Any, rows: Sequence[Mapping[str, Sequence[int]]], pad_id: int,
               max_rows: int, budget: int = LOGITS_BUDGET) -> list[Scored | None]:
    """Score each row's labelled tokens (``labels`` give the targets, -100 leaves one out).

    Args:
        model: A causal language model (transformers' interface); put in eval mode here and
            back after.
        rows: ``input_ids`` and ``labels`` of equal length per row.
        pad_id: The id that pads shorter rows on the right (masked out).
        max_rows: The most rows per forward pass.
        budget: The most bytes of float32 logits per forward pass.

    Returns:
        One `Scored` per row, in the order given; None for a row with no labelled token.

    """
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    vocab = _vocab_size(model)
    out: list[Scored | None] = [None] * len(rows)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for group in groups(rows, vocab, max_rows, budget):
                width = max(len(rows[j]["input_ids"]) for j in group)
                ids = torch.full((len(group), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(group), width), dtype=torch.long)
                targets = []
                for b, j in enumerate(group):
                    n = len(rows[j]["input_ids"])
                    ids[b, :n] = torch.tensor(list(rows[j]["input_ids"]), dtype=torch.long)
                    mask[b, :n] = 1
                    targets.append(labelled_positions(rows[j]["labels"]))
                first = min(t[0] for t in targets) - 1
                logits = _logits(model, ids.to(device), mask.to(device), width - first)
                offset = width - logits.size(1)  # position of logits[:, 0]
                for b, j in enumerate(group):
                    where = torch.tensor(targets[b], dtype=torch.long, device=device)
                    labels = torch.tensor([rows[j]["labels"][p] for p in targets[b]],
                                          dtype=torch.long, device=device)
                    nll = F.cross_entropy(logits[b, where - 1 - offset].float(), labels,
                                          reduction="sum")
                    out[j] = Scored(-float(nll), len(targets[b]))
                del logits
    finally:
        model.train(was_training)
    return out


def _logits(model: Any, ids: Any, mask: Any, keep: int) -> Any:
    """The last ``keep`` positions' logits; every position's for models without the option."""
    try:
        return model(input_ids=ids, attention_mask=mask, logits_to_keep=keep,
                     use_cache=False).logits
    except TypeError:
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits


def _vocab_size(model: Any) -> int:
    """The width of the model's logits (the output embedding's rows)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(getattr(model.config, "vocab_size", 0) or 1)
