"""``reward``: train a reward model on preference pairs (TRL RewardTrainer).

The model gets a sequence-classification head with one output, named ``reward`` in its
config (``id2label``), trained so that the chosen answer scores above the rejected one
(Bradley-Terry). The saved model is what the ``reward_model`` reward loads: it renders prompt +
completion through the chat template, as RewardTrainer rendered the pairs here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from ftp import Shape, TrainContext, TrainerMethod, TrainingOptions, UserError, hookimpl
from ftp_builtin.rewards.model import conversation_ids
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
        max_length: int = Field(1024, gt=0, description="prompt + answer longer than this "
                                "loses the start of its prompt (counted): the end, where a "
                                "reward model reads its score, is kept, and no pair is lost.")
        center_rewards: float | None = Field(
            None, ge=0, description="Weight of a term pulling rewards towards 0 (e.g. 0.01), "
            "so that scores of different runs compare [center_rewards_coefficient]."
        )

    config: Config
    #: Pairs cut to ``max_length`` by the last `trainer` call (for `prepared`'s report).
    _truncated: int = 0

    @classmethod
    def starts_from(cls) -> frozenset[str]:
        """A reward model starts from a language model (its head is new) or another one."""
        return frozenset({"causal-lm", "sequence-classification"})

    def model_options(self, train: Sequence[dict[str, Any]]) -> dict[str, Any]:
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
        rows, self._truncated = self._tokenized(ctx)
        # Already tokenized (chosen_ids/rejected_ids): TRL skips its own tokenization and its
        # length filter, which would drop every long pair, has nothing left to drop.
        return RewardTrainer(model=ctx.model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=ctx.tokenizer, callbacks=ctx.callbacks)

    def _tokenized(self, ctx: TrainContext) -> tuple[list[dict[str, list[int]]], int]:
        """Each pair as ``chosen_ids``/``rejected_ids``, rendered as the reward scores them."""
        tok, limit = ctx.tokenizer, self.config.max_length
        rows, truncated = [], 0
        for pair in ctx.train:
            ids = {}
            cut = False
            for answer in ("chosen", "rejected"):
                ids[f"{answer}_ids"], was_cut = conversation_ids(tok, pair["prompt"] + pair[answer],
                                                                 limit)
                cut = cut or was_cut
            truncated += cut
            rows.append(ids)
        return rows, truncated

    def prepared(self, ctx: TrainContext, trainer: Any) -> None:
        """Say how many pairs lost the start of their prompt to ``max_length``."""
        kept, truncated = len(trainer.train_dataset), self._truncated
        if truncated:
            print(f"  warning: train: {truncated} of {kept} pairs are longer than "
                  f"max_length={self.config.max_length} tokens; they keep their end (the "
                  "answers, where the score is read) and lose the start of the prompt",
                  flush=True)
        ctx.log({"stage": ctx.stage, "event": "tokenized", "examples": kept,
                 "truncated": truncated, "max_length": self.config.max_length})
        if not kept:
            raise UserError("no training pair to learn from")


@hookimpl
def ftp_methods() -> list[type]:
    """Register ``reward``."""
    return [RewardModelMethod]
