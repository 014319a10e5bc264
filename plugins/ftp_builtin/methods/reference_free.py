"""Reference-free preference tuning: ``orpo`` and ``simpo``, on preference pairs.

Neither needs a reference model: no second copy of the weights, no reference forward pass.
TRL 1.16 keeps DPO, KTO, GRPO and the reward trainer in its main API, but moved ORPO and
CPO (whose ``loss_type = "simpo"`` is SimPO) to ``trl.experimental``: these methods use
``trl.experimental.orpo.ORPOTrainer`` and ``trl.experimental.cpo.CPOTrainer``. TRL renders the
conversational pairs through the tokenizer's chat template, as for DPO.
"""

from __future__ import annotations

import warnings
from typing import Any

from pydantic import Field

from ftp import Method, Shape, TrainContext, hookimpl
from ftp_builtin.methods.common import TrainingOptions, run_trainer, training_arguments
from ftp_builtin.tokenize import require_chat_template


class ReferenceFreeOptions(TrainingOptions):
    """What ORPO and SimPO share: the training options plus the sequence length."""

    learning_rate: float = Field(
        8e-6, gt=0, description="8e-6 suits full finetuning; with a LoRA adapter use more, "
        "e.g. 5e-5 to 2e-4."
    )
    max_length: int = Field(1024, gt=0, description="prompt + answer longer than this is cut.")


class ORPO(Method):
    """Odds-ratio preference optimisation: SFT plus a preference term, no reference (TRL)."""

    name = "orpo"
    accepts = frozenset({Shape.PREFERENCE})
    task = "causal-lm"

    class Config(ReferenceFreeOptions):
        """ORPO options: the weight of the odds-ratio term."""

        beta: float = Field(0.1, gt=0, description="Weight of the odds-ratio (preference) term "
                            "against the chosen answers' NLL (λ in the paper).")

    def train(self, ctx: TrainContext) -> Any:
        """Build an ORPOTrainer on the pairs, train, and return the model."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TRL warns that trl.experimental may change
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer
        cfg = self.config
        args = _arguments(ctx, cfg, ORPOConfig, beta=cfg.beta)
        return _train(ctx, cfg, ORPOTrainer, args)


class SimPO(Method):
    """Simple preference optimisation: length-normalised reward margin, no reference (TRL CPO)."""

    name = "simpo"
    accepts = frozenset({Shape.PREFERENCE})
    task = "causal-lm"

    class Config(ReferenceFreeOptions):
        """SimPO options: the reward scale, the target margin, an optional SFT term."""

        beta: float = Field(2.0, gt=0, description="Scale of the length-normalised reward.")
        gamma: float = Field(0.5, ge=0, description="Target reward margin between chosen and "
                             "rejected [simpo_gamma].")
        sft_weight: float = Field(0.0, ge=0, description="Weight of the chosen answers' NLL "
                                  "added to the loss (CPO-SimPO) [cpo_alpha]; 0: pure SimPO.")

    def train(self, ctx: TrainContext) -> Any:
        """Build a CPOTrainer with the SimPO loss on the pairs, train, and return the model."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from trl.experimental.cpo import CPOConfig, CPOTrainer
        cfg = self.config
        args = _arguments(ctx, cfg, CPOConfig, beta=cfg.beta, loss_type="simpo",
                          simpo_gamma=cfg.gamma, cpo_alpha=cfg.sft_weight)
        return _train(ctx, cfg, CPOTrainer, args)


def _arguments(ctx: TrainContext, cfg: ReferenceFreeOptions, config_cls: Any,
               **extra: Any) -> Any:
    return training_arguments(cfg, ctx, config_cls, max_length=cfg.max_length,
                              eval_strategy="no", **extra)


def _train(ctx: TrainContext, cfg: ReferenceFreeOptions, trainer_cls: Any, args: Any) -> Any:
    from datasets import Dataset
    from transformers import set_seed

    set_seed(ctx.seed)
    require_chat_template(ctx.tokenizer)
    trainer = trainer_cls(model=ctx.model, args=args, train_dataset=Dataset.from_list(ctx.train),
                          processing_class=ctx.tokenizer, callbacks=ctx.callbacks)
    lean = cfg.frozen_bf16 and bool(args.bf16) and ctx.adapter is not None
    return run_trainer(trainer, ctx.model, lean, "batch_size or max_length")


@hookimpl
def ftp_methods() -> list[type]:
    """Register ``orpo`` and ``simpo``."""
    return [ORPO, SimPO]
