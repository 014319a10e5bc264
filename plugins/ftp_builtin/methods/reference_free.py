"""Reference-free preference tuning: ``orpo`` and ``simpo``, on preference pairs.

Neither needs a reference model: no second copy of the weights, no reference forward pass
(`PreferenceMethod` with ``uses_reference = False``). TRL 1.16 keeps DPO, KTO, GRPO and the
reward trainer in its main API, but moved ORPO and CPO (whose ``loss_type = "simpo"`` is
SimPO) to ``trl.experimental``: these methods use ``trl.experimental.orpo.ORPOTrainer`` and
``trl.experimental.cpo.CPOTrainer``. TRL renders the conversational pairs through the
tokenizer's chat template, as for DPO.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from pydantic import Field

from ftp import Shape, TrainContext, UserError, hookimpl
from ftp.components import TokenizedExample
from ftp_builtin.methods.preference import PreferenceMethod, PreferenceOptions
from ftp_builtin.tokenize import render, require_chat_template


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

    def trainer(self, ctx: TrainContext) -> Any:
        """The TRL trainer, on the pairs whose prompt leaves room for an answer.

        TRL's experimental trainers cut such a pair to an empty answer, whose mean
        log-probability is NaN and poisons the loss; DPO's trainer drops them, and so does
        ftp here (counted in metrics.jsonl).
        """
        require_chat_template(ctx.tokenizer)
        limit = self.config.max_length
        fits = [r for r in ctx.train
                if len(render(ctx.tokenizer, r["prompt"], generation_prompt=True)) < limit]
        if not fits:
            raise UserError(f"every training prompt fills max_length={limit} on its own, so "
                            "no answer token is left; raise max_length")
        return super().trainer(dataclasses.replace(ctx, train=fits))

    def prepared(self, ctx: TrainContext, trainer: Any) -> None:
        """Record how many pairs are trained on, and how many were dropped."""
        kept = len(trainer.train_dataset)
        ctx.log({"stage": ctx.stage, "event": "tokenized", "examples": kept,
                 "dropped": len(ctx.train) - kept})

    def tokenize_examples(self, tokenizer: Any, records: list[dict[str, Any]]
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


@hookimpl
def ftp_methods() -> list[type]:
    """Register ``orpo`` and ``simpo``."""
    return [ORPO, SimPO]
