"""``sft``: supervised / instruction finetuning on TRL's SFTTrainer.

Records are tokenized by ftp (``ftp_builtin.tokenize``) through the tokenizer's chat template,
with loss on assistant tokens and their EOS by default, then handed to SFTTrainer as
ready-made ``input_ids`` and ``labels``. The loss is plain token cross-entropy computed only
at labelled positions (``loss_on_labelled_positions``): TRL's fused loss layer also computes
entropy and accuracy for every token, which cost 30–40% of step time on CPU for numbers we
do not show.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from ftp import Shape, TrainContext, TrainerMethod, TrainingOptions, UserError, hookimpl
from ftp.cache import RowsWriter
from ftp.components import IGNORE_INDEX, TokenizedExample, TokenSequence
from ftp.turns import untrained_turns
from ftp_builtin import tokenize as tokenize_module
from ftp_builtin.methods.common import ChunkedHead, accepts_loss_kwargs, with_labelled_loss
from ftp_builtin.methods.tokenized import cached_rows, plugin_identity
from ftp_builtin.tokenize import Tokenized, require_chat_template, tokenize_records
from ftp_builtin.tokenize_parallel import tokenize_into


class SFT(ChunkedHead, TrainerMethod):
    """Supervised finetuning on conversations, prompt/completion pairs or text (TRL SFTTrainer)."""

    name = "sft"
    accepts = frozenset({Shape.CONVERSATIONAL, Shape.PROMPT_COMPLETION, Shape.LANGUAGE_MODELING})
    task = "causal-lm"
    out_of_memory_hint = "batch_size or max_length"

    class Config(TrainingOptions):
        """SFT options: the shared training options plus sequence handling."""

        max_length: int = Field(1024, gt=0, description="Longer examples are truncated.")
        assistant_only_loss: bool = Field(
            True, description="Loss on assistant tokens (and their EOS) only; false: every token."
        )
        padding_free: bool = Field(
            True, description="Concatenate a batch into one row without padding (no "
            "cross-example attention)."
        )

    config: Config

    def trainer(self, ctx: TrainContext) -> Any:
        """Tokenize, and build an SFTTrainer on the rows with the labelled-position loss."""
        from transformers import set_seed
        from trl import SFTConfig, SFTTrainer
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        cfg = self.config
        set_seed(ctx.seed)
        if any("messages" in r or isinstance(r.get("prompt"), list) for r in ctx.train[:1]):
            require_chat_template(ctx.tokenizer)
        train, cached = self._tokenize(ctx, "train", ctx.train)
        # A row cut before its first trained token is a bad row: an error naming its file and
        # line, or (on_bad_rows = "skip") left out and counted with the dataset's other skips.
        ctx.bad_rows(f"no trained token after truncation to max_length={cfg.max_length}",
                     [(i, why) for i, why in train.empty],
                     "raise max_length, shorten those prompts")
        self._warn(ctx, "train", dataclasses.replace(train, dropped=0))
        if not train.rows:
            raise UserError("no training example has a token to learn from after truncation "
                            f"to max_length={cfg.max_length}")
        ctx.log({"stage": ctx.stage, "event": "tokenized", "examples": len(train.rows),
                 "tokens": train.tokens, "loss_tokens": train.loss_tokens,
                 "truncated": train.truncated, "dropped": train.dropped, "cached": cached,
                 "untrained_turns": sum(untrained_turns(r) for r in ctx.train)})
        # Held-out rows are not tokenized: sft never evaluates during training (the `loss`
        # evaluator scores them after), and tokens nobody reads would only cost time.

        args = self.arguments(
            ctx, SFTConfig,
            max_length=cfg.max_length,
            # Padding-free batching is done by the collator below; TRL refuses a custom
            # collator when its own padding_free flag is set.
            padding_free=False,
            eval_strategy="no",
            dataset_kwargs={"skip_prepare_dataset": True},
        )
        collator = DataCollatorForLanguageModeling(
            pad_token_id=ctx.tokenizer.pad_token_id, padding_free=cfg.padding_free
        )

        trainer = with_labelled_loss(SFTTrainer)(
            model=ctx.model,
            args=args,
            # Arrow columns straight from the int32 arrays: no Python int per token.
            train_dataset=train.rows.dataset(),
            processing_class=ctx.tokenizer,
            data_collator=collator,
            callbacks=ctx.callbacks,
        )
        return accepts_loss_kwargs(trainer)

    @staticmethod
    def _warn(ctx: TrainContext, split: str, tokenized: Tokenized) -> None:
        """Show truncation and template repairs on the terminal (cached runs too), and log them."""
        for warning in tokenized.warnings(ctx.tokenizer):
            print(f"  warning: {split}: {warning}", flush=True)
            ctx.log({"stage": ctx.stage, "event": "warning", "split": split, "message": warning})

    def _tokenize(self, ctx: TrainContext, split: str, records: Sequence[dict[str, Any]]
                  ) -> tuple[Tokenized, bool]:
        """`tokenize_records` through the tokenized-data cache; also whether it was a hit."""
        cfg = self.config
        options = {"method": self.name, "max_length": cfg.max_length,
                   "assistant_only_loss": cfg.assistant_only_loss}

        def write(writer: RowsWriter) -> dict[str, Any]:
            # Rows with nothing to learn from are kept aside (``empty``), not refused here:
            # the dataset's on_bad_rows decides, and the cached tokens do not depend on it.
            # Several processes for many rows per core (the same tokens as one), each
            # writing its tokens out a chunk at a time: none is held whole.
            t = tokenize_into(writer, ctx.tokenizer, records, cfg.max_length,
                              cfg.assistant_only_loss)
            # Everything but the rows is counts and notes, kept as JSON beside them.
            return t.counts()

        rows, counts, hit = cached_rows(ctx, split, records, options,
                                        plugin_identity(tokenize_module), write=write)
        return Tokenized(rows=rows, **counts), hit

    def tokenize_examples(self, tokenizer: Any, records: Sequence[dict[str, Any]]
                          ) -> list[TokenizedExample]:
        """Each record as `train` tokenizes it: whole, then cut at ``max_length``."""
        cfg = self.config
        if any("messages" in r or "prompt" in r for r in records[:1]):
            require_chat_template(tokenizer)
        out = []
        for record in records:
            whole = tokenize_records(tokenizer, [record], None, cfg.assistant_only_loss).rows
            if not whole:  # no token carries loss even uncut
                out.append(TokenizedExample(dropped=True))
                continue
            ids, labels = whole[0]["input_ids"], whole[0]["labels"]
            example = TokenizedExample(length=len(ids), truncated=len(ids) > cfg.max_length)
            ids, labels = ids[: cfg.max_length], labels[: cfg.max_length]
            # As tokenize_records: a row whose labels (after the first token) are all
            # ignored has nothing to learn from and is dropped.
            example.dropped = all(lab == IGNORE_INDEX for lab in labels[1:])
            example.sequences.append(TokenSequence(ids, labels))
            out.append(example)
        return out


@hookimpl
def ftp_methods() -> list[type]:
    """Register ``sft``."""
    return [SFT]
