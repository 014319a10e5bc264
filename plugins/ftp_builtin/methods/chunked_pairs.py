"""ORPO's and SimPO's forward pass with the LM head applied a chunk of positions at a time.

TRL's experimental ORPOTrainer and CPOTrainer (SimPO) build the logits of every position of
chosen and rejected sequences (``[2 x batch, length, vocabulary]``), then take an NLL term over
the chosen rows and each answer's mean log-probability from them. `chunked_pair_forward`
overrides their ``concatenated_forward`` where the model's head is a plain linear layer
(``chunked_loss.plain_head``): the model returns hidden states, and the log-probabilities of
the positions the losses read are computed through the head a chunk at a time
(``chunked_loss.linear_log_probs``), so the vocabulary-wide logits never exist whole. The
metrics TRL logs from the logits, ``logits/chosen`` and ``logits/rejected`` (the mean logit
over every position and the vocabulary), are exact without them: the mean of ``h @ W.T + b``
is ``mean(h) @ mean(W) + mean(b)``. Elsewhere (softcapped or LoRA-wrapped heads,
encoder-decoders, MoE auxiliary losses) TRL's own forward runs.
"""

from __future__ import annotations

from typing import Any

from ftp_builtin.methods.chunked_loss import head_returns_hidden, linear_log_probs, plain_head

IGNORED = -100


def chunked_pair_forward(trainer_cls: Any) -> Any:
    """``trainer_cls`` (TRL's ORPOTrainer or CPOTrainer) whose forward pass chunks the head."""

    class ChunkedHead(trainer_cls):
        def concatenated_forward(self, model: Any, batch: dict[str, Any]) -> tuple[Any, ...]:
            head = plain_head(model)
            if head is None or self.is_encoder_decoder or self.aux_loss_enabled:
                return tuple(super().concatenated_forward(model, batch))
            return pair_forward(self, model, head, batch)

    ChunkedHead.__name__ = ChunkedHead.__qualname__ = trainer_cls.__name__
    return ChunkedHead


def pair_forward(trainer: Any, model: Any, head: Any, batch: dict[str, Any]) -> tuple[Any, ...]:
    """What TRL's ``concatenated_forward`` returns, computed through the head in chunks.

    ``(chosen_logps, rejected_logps, chosen_mean_logit, rejected_mean_logit, nll_loss)``; the
    mean logits are one-element tensors (TRL only logs their mean).
    """
    import torch

    cpo = hasattr(trainer, "cpo_alpha")  # CPOTrainer; ORPOTrainer otherwise
    concatenated = trainer.concatenated_inputs(
        batch, is_encoder_decoder=False,
        padding_value=trainer.pad_token_id if cpo else trainer.padding_value,
        device=trainer.accelerator.device)
    ids = concatenated["concatenated_input_ids"]
    attention = concatenated["concatenated_attention_mask"]
    labels = concatenated["concatenated_labels"]
    chosen = batch["chosen_labels"].shape[0]
    with head_returns_hidden(head):
        hidden = model(ids, attention_mask=attention, use_cache=False).logits

    # What each loss reads, as next-token targets: the answers' labels for the mean
    # log-probabilities; for the NLL term, ORPO's every attended token of a chosen row, CPO's
    # chosen labels (none when its weight is 0).
    answer_targets = labels[:, 1:]
    answer_mask = answer_targets != IGNORED
    nll_targets = torch.full_like(answer_targets, IGNORED)
    if not cpo:
        nll_targets[:chosen] = ids[:chosen, 1:].masked_fill(attention[:chosen, 1:] == 0,
                                                            IGNORED)
    elif trainer.cpo_alpha != 0:
        nll_targets[:chosen] = answer_targets[:chosen]
    nll_mask = nll_targets != IGNORED
    # A position both read with the same target is scored once.
    shared = nll_mask & answer_mask & (nll_targets == answer_targets)
    extra = answer_mask & ~shared
    states = hidden[:, :-1]
    log_probs = linear_log_probs(
        torch.cat([states[nll_mask], states[extra]]), head.weight, head.bias,
        torch.cat([nll_targets[nll_mask], answer_targets[extra]]))[0]
    scored = int(nll_mask.sum())
    nll_log_probs = log_probs.new_zeros(nll_mask.shape).masked_scatter(nll_mask,
                                                                       log_probs[:scored])
    per_token = torch.where(shared, nll_log_probs, log_probs.new_zeros(extra.shape)
                            .masked_scatter(extra, log_probs[scored:]))

    summed = (per_token * answer_mask).sum(-1)
    average = not cpo or trainer.loss_type in ("ipo", "simpo")
    logps = summed / answer_mask.sum(-1) if average else summed
    if cpo and trainer.cpo_alpha == 0:
        nll = torch.tensor(0.0).to(trainer.accelerator.device)
    else:
        nll = -nll_log_probs.sum() / nll_mask.sum()  # CrossEntropyLoss's mean

    with torch.no_grad():
        # ORPO's logged logits leave out the last position, CPO's keep it.
        positions = hidden if cpo else hidden[:, :-1]
        mean_weight = head.weight.float().mean(0)
        offset = 0.0 if head.bias is None else head.bias.float().mean()
        chosen_logit = positions[:chosen].float().mean((0, 1)) @ mean_weight + offset
        rejected_logit = positions[chosen:].float().mean((0, 1)) @ mean_weight + offset
    return logps[:chosen], logps[chosen:], chosen_logit[None], rejected_logit[None], nll
