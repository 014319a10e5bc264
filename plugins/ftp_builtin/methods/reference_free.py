"""Reference-free preference tuning: ``orpo`` and ``simpo``, on preference pairs.

Neither needs a reference model: no second copy of the weights, no reference forward pass
(`PreferenceMethod` with ``uses_reference = False``). TRL 1.16 keeps DPO, KTO, GRPO and the
reward trainer in its main API, but moved ORPO and CPO (whose ``loss_type = "simpo"`` is
SimPO) to ``trl.experimental``: these methods use ``trl.experimental.orpo.ORPOTrainer`` and
``trl.experimental.cpo.CPOTrainer``. TRL renders the conversational pairs through the
tokenizer's chat template, as for DPO.

A pair longer than ``max_length`` is fitted as dpo fits it (``truncation_mode``, see
``ftp_builtin.truncation``): by default the prompt loses its start and the answers, with their
end-of-sequence token, are kept whole, so every pair trains.

Where the model's head is a plain linear layer, the log-probabilities both losses read are
computed through the head a chunk of positions at a time (``ftp_builtin.methods.chunked_pairs``):
TRL's forward would keep the logits of every position of chosen and rejected rows.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from ftp import Shape, TrainContext, hookimpl
from ftp.components import TokenizedExample
from ftp_builtin.methods.chunked_pairs import chunked_pair_forward
from ftp_builtin.methods.pairs import INDEX, fit_rows
from ftp_builtin.methods.preference import PreferenceMethod, PreferenceOptions

#: The answers of a pair, as TRL's experimental trainers name their columns.
ANSWERS = ("chosen", "rejected")
#: TRL's label for a token that carries no loss (the prompt's).
IGNORED = -100


class ReferenceFreeOptions(PreferenceOptions):
    """What ORPO and SimPO share: the preference options, with their own learning rate."""

    learning_rate: float = Field(
        8e-6, gt=0, description="8e-6 suits full finetuning; with a LoRA adapter use more, "
        "e.g. 5e-5 to 2e-4."
    )


class _ReferenceFree(PreferenceMethod):
    """A preference method of TRL's experimental, reference-free trainers."""

    accepts = frozenset({Shape.PREFERENCE})
    uses_reference = False

    def fitting_trainer(self, trainer_cls: Any, ctx: TrainContext) -> Any:
        """``trainer_cls`` whose tokenized pairs are fitted into max_length as dpo's are.

        TRL's experimental trainers cut ``prompt + answer`` at the end, so a pair whose prompt
        alone fills ``max_length`` would keep an empty answer, whose mean log-probability is
        NaN and poisons the loss. ftp lets them tokenize whole and fits each pair with dpo's
        `ftp_builtin.methods.pairs.fit_rows` (``truncation_mode``: by default the prompt
        loses its start), so every pair trains; the counts go where dpo's go.
        """
        return _fitted(trainer_cls, ctx, self.config)

    def tokenize_examples(self, tokenizer: Any, records: Sequence[dict[str, Any]]
                          ) -> list[TokenizedExample] | None:
        """None: TRL's experimental trainers tokenize their own way, not shown here."""
        return None


class ORPO(_ReferenceFree):
    """Odds-ratio preference optimisation: SFT plus a preference term, no reference (TRL)."""

    name = "orpo"

    class Config(ReferenceFreeOptions):
        """ORPO options: the weight of the odds-ratio term."""

        beta: float = Field(0.1, gt=0, description="Weight of the odds-ratio (preference) term "
                            "against the chosen answers' NLL (λ in the paper).")

    config: Config

    def trl_trainer(self) -> tuple[Any, Any]:
        """TRL's experimental ORPOConfig and ORPOTrainer."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TRL warns that trl.experimental may change
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer
        return ORPOConfig, ORPOTrainer


class SimPO(_ReferenceFree):
    """Simple preference optimisation: length-normalised reward margin, no reference (TRL CPO)."""

    name = "simpo"

    class Config(ReferenceFreeOptions):
        """SimPO options: the reward scale, the target margin, an optional SFT term."""

        beta: float = Field(2.0, gt=0, description="Scale of the length-normalised reward.")
        gamma: float = Field(0.5, ge=0, description="Target reward margin between chosen and "
                             "rejected [simpo_gamma].")
        sft_weight: float = Field(0.0, ge=0, description="Weight of the chosen answers' NLL "
                                  "added to the loss (CPO-SimPO) [cpo_alpha]; 0: pure SimPO.")

    config: Config

    def trl_trainer(self) -> tuple[Any, Any]:
        """TRL's experimental CPOConfig and CPOTrainer."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from trl.experimental.cpo import CPOConfig, CPOTrainer
        return CPOConfig, CPOTrainer

    def trl_options(self) -> dict[str, Any]:
        """The SimPO loss, its margin, and the weight of the NLL term."""
        cfg = self.config
        return {"loss_type": "simpo", "simpo_gamma": cfg.gamma, "cpo_alpha": cfg.sft_weight}


def _fitted(trainer_cls: Any, ctx: TrainContext, cfg: PreferenceOptions) -> Any:
    """``trainer_cls`` tokenizing each pair whole, then fitting them all (`fit_rows`).

    The fitted rows replace the tokenized dataset before training starts; what fitting did is
    kept as ``ftp_fitted`` for `PreferenceMethod.prepared` to report. Where the head is a plain
    linear layer, the forward pass applies it a chunk of positions at a time
    (``ftp_builtin.methods.chunked_pairs``).
    """
    from datasets import Dataset

    class _Fitted(chunked_pair_forward(trainer_cls)):  # type: ignore[misc]
        def __init__(self, *args: Any, train_dataset: Any, **kwargs: Any) -> None:
            # The index names each row's source file and line if it has to be skipped.
            indexed = train_dataset.add_column(INDEX, list(range(len(train_dataset))))
            super().__init__(*args, train_dataset=indexed, **kwargs)
            tokenized: Any = getattr(self, "train_dataset")  # noqa: B009 (mypy: TRL is untyped)
            rows = [_as_pair(row) for row in tokenized.to_list()]
            self.ftp_fitted = fit_rows(ctx, rows, ANSWERS, cfg.max_length,
                                       cfg.truncation_mode)
            self.train_dataset = Dataset.from_list([_as_trl(r) for r in self.ftp_fitted.rows])

        def tokenize_row(self, feature: Any, model: Any = None) -> dict[str, Any]:
            # Tokenize whole: TRL's own cut (at the end) would empty a long prompt's answers.
            limit: int = getattr(self, "max_length")  # noqa: B009 (mypy: TRL is untyped)
            self.max_length = sys.maxsize
            try:
                return dict(super().tokenize_row(feature, model))
            finally:
                self.max_length = limit

    _Fitted.__name__ = _Fitted.__qualname__ = trainer_cls.__name__
    return _Fitted


def _as_pair(row: dict[str, Any]) -> dict[str, Any]:
    """A row TRL tokenized, as `fit_rows` takes a pair: one prompt, then each answer.

    The prompt is what both sequences share before their first labelled token (TRL may give
    one answer's last prompt token to the answer, where the tokenizer merged it); each answer
    token travels with its label, so what TRL masked stays masked.
    """
    first = min(_first_labelled(row[f"{a}_labels"]) for a in ANSWERS)
    chosen, rejected = row["chosen_input_ids"], row["rejected_input_ids"]
    shared = 0
    while shared < first and chosen[shared] == rejected[shared]:
        shared += 1
    pair: dict[str, Any] = {INDEX: row[INDEX], "prompt_ids": chosen[:shared]}
    for a in ANSWERS:
        pair[f"{a}_ids"] = list(zip(row[f"{a}_input_ids"][shared:],
                                    row[f"{a}_labels"][shared:], strict=True))
    return pair


def _as_trl(pair: dict[str, Any]) -> dict[str, Any]:
    """A fitted pair back in TRL's columns: prompt + answer, its attention mask and labels."""
    prompt = list(pair["prompt_ids"])
    row: dict[str, Any] = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for a in ANSWERS:
        answer = pair[f"{a}_ids"]
        row[f"{a}_input_ids"] = prompt + [token for token, _ in answer]
        row[f"{a}_attention_mask"] = [1] * (len(prompt) + len(answer))
        row[f"{a}_labels"] = [IGNORED] * len(prompt) + [label for _, label in answer]
    return row


def _first_labelled(labels: list[int]) -> int:
    """The position of the first token that carries loss."""
    return next((i for i, label in enumerate(labels) if label != IGNORED), len(labels))


@hookimpl
def ftp_methods() -> list[type]:
    """Register ``orpo`` and ``simpo``."""
    return [ORPO, SimPO]
