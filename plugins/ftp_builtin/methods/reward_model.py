"""``reward``: train a reward model on preference pairs (TRL RewardTrainer).

The model gets a sequence-classification head with one output, named ``reward`` in its
config (``id2label``), trained so that the chosen answer scores above the rejected one
(Bradley-Terry). The saved model is what the ``reward_model`` reward loads: it renders prompt +
completion through the chat template, as RewardTrainer rendered the pairs here.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ftp import Shape, TrainContext, TrainerMethod, TrainingOptions, UserError, hookimpl
from ftp_builtin.tokenize import require_chat_template

#: The name of the reward model's one output, in its saved config.
REWARD_LABEL = "reward"


class RewardModelMethod(TrainerMethod):
    """A reward model from preference pairs: chosen scores above rejected (TRL RewardTrainer)."""

    name = "reward"
    accepts = frozenset({Shape.PREFERENCE})
    task = "sequence-classification"
    out_of_memory_hint = "batch_size or max_length"

    class Config(TrainingOptions):
        """Reward-model options: the training options plus length and centring."""

        learning_rate: float = Field(1e-5, gt=0, description="1e-5 suits full finetuning; "
                                     "with a LoRA adapter use more, e.g. 1e-4.")
        max_length: int = Field(1024, gt=0, description="Pairs with an answer longer than "
                                "this (prompt included) are left out (and counted).")
        center_rewards: float | None = Field(
            None, ge=0, description="Weight of a term pulling rewards towards 0 (e.g. 0.01), "
            "so that scores of different runs compare [center_rewards_coefficient]."
        )

    config: Config

    @classmethod
    def starts_from(cls) -> frozenset[str]:
        """A reward model starts from a language model (its head is new) or another one."""
        return frozenset({"causal-lm", "sequence-classification"})

    def model_options(self, train: list[dict[str, Any]]) -> dict[str, Any]:
        """One output, named ``reward``."""
        return {"num_labels": 1, "id2label": {0: REWARD_LABEL},
                "label2id": {REWARD_LABEL: 0}}

    def trainer(self, ctx: TrainContext) -> Any:
        """TRL's RewardTrainer on the pairs (it tokenizes ``ctx.train`` here)."""
        from datasets import Dataset
        from transformers import set_seed
        from trl import RewardConfig, RewardTrainer

        cfg = self.config
        set_seed(ctx.seed)
        require_chat_template(ctx.tokenizer)
        args = self.arguments(ctx, RewardConfig, max_length=cfg.max_length,
                              center_rewards_coefficient=cfg.center_rewards,
                              eval_strategy="no")
        if ctx.model.config.pad_token_id is None:
            ctx.model.config.pad_token_id = ctx.tokenizer.pad_token_id
        return RewardTrainer(model=ctx.model, args=args,
                             train_dataset=Dataset.from_list(ctx.train),
                             processing_class=ctx.tokenizer, callbacks=ctx.callbacks)

    def prepared(self, ctx: TrainContext, trainer: Any) -> None:
        """Record how many pairs fit ``max_length``; refuse a run with none."""
        kept = len(trainer.train_dataset)
        ctx.log({"stage": ctx.stage, "event": "tokenized", "examples": kept,
                 "dropped": len(ctx.train) - kept})
        if not kept:
            raise UserError(f"every pair is longer than max_length={self.config.max_length}; "
                            "raise it")


@hookimpl
def ftp_methods() -> list[type]:
    """Register ``reward``."""
    return [RewardModelMethod]
