"""``cpt``: continued pretraining on raw text, with transformers' Trainer.

Documents are tokenized without a chat template, each followed by exactly one EOS, joined and
cut into blocks of ``block_size`` tokens (``ftp_builtin.blocks``); the last, partial block is
dropped and its tokens are counted in the ``packed`` event of metrics.jsonl. Every token of a
block but its first carries loss, computed as sft computes it (``loss_on_labelled_positions``:
the LM head and cross-entropy a chunk of positions at a time where the head allows), equal to
the model's own causal-LM loss with ``labels = input_ids``.

Labels are built here, not by transformers' ``DataCollatorForLanguageModeling``: that collator
masks pad tokens out of the loss, and with pad == EOS (most chat models) it would hide every
document boundary from the model.

With an adapter only the LoRA weights train. To train the embeddings and the LM head too (new
vocabulary, a new script or language), list them in the adapter:
``adapter = { r = 16, modules_to_save = ["embed_tokens", "lm_head"] }``; peft trains full copies
of them and saves them with the adapter. On a model whose embeddings are tied to the LM head
(SmolLM2) listing both unties them: the saved model gets its own ``lm_head`` and
``tie_word_embeddings = false``. Without an adapter every weight trains, embeddings included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from ftp import Shape, TrainContext, TrainerMethod, TrainingOptions, UserError, hookimpl
from ftp.components import TokenizedExample, TokenSequence
from ftp_builtin import blocks as blocks_module
from ftp_builtin.blocks import check_block_size, document_ids, pack_ids
from ftp_builtin.methods.common import ChunkedHead, accepts_loss_kwargs, with_labelled_loss
from ftp_builtin.methods.tokenized import cached_rows, plugin_identity


class CPT(ChunkedHead, TrainerMethod):
    """Continued pretraining on raw text: EOS-joined documents in fixed-length blocks."""

    name = "cpt"
    accepts = frozenset({Shape.LANGUAGE_MODELING})
    task = "causal-lm"
    out_of_memory_hint = "batch_size or block_size"

    class Config(TrainingOptions):
        """CPT options: the shared training options plus the block length."""

        block_size: int = Field(
            512, ge=2, description="Tokens per training block; the text is one EOS-joined "
            "stream cut into blocks of this length, the last partial block dropped."
        )

    config: Config

    def trainer(self, ctx: TrainContext) -> Any:
        """Pack the text into blocks, and build a transformers Trainer on them."""
        from transformers import Trainer, set_seed

        cfg = self.config
        set_seed(ctx.seed)
        check_block_size(ctx.model, cfg.block_size)
        texts = [r["text"] for r in ctx.train]
        # The documents' ids are cached, not the blocks: block_size then only re-cuts them.
        rows, _, cached = cached_rows(
            ctx, "train", texts, {"method": self.name}, plugin_identity(blocks_module),
            lambda: ([{"input_ids": ids} for ids in document_ids(ctx.tokenizer, texts)], {}))
        packed = pack_ids([r["input_ids"] for r in rows], cfg.block_size)
        ctx.log({"stage": ctx.stage, "event": "packed", "documents": packed.documents,
                 "tokens": packed.tokens, "blocks": len(packed.blocks),
                 "block_size": cfg.block_size, "dropped_tokens": packed.dropped_tokens,
                 "cached": cached})
        if not packed.blocks:
            raise UserError(f"the training text is {packed.tokens} tokens, less than one block "
                            f"of block_size = {cfg.block_size}; lower block_size or add text")

        return accepts_loss_kwargs(with_labelled_loss(Trainer)(
            model=ctx.model,
            args=self.arguments(ctx, eval_strategy="no"),
            train_dataset=packed.blocks,
            data_collator=collate_blocks,
            processing_class=ctx.tokenizer,
            callbacks=ctx.callbacks,
        ))

    def tokenize_examples(self, tokenizer: Any, records: Sequence[dict[str, Any]]
                          ) -> list[TokenizedExample]:
        """Each document as it enters the stream: BOS if the tokenizer adds one, text, one EOS.

        Every token carries loss. Documents are not truncated: the stream is cut into blocks
        of ``block_size`` that may span documents.
        """
        docs = document_ids(tokenizer, [r["text"] for r in records])
        return [TokenizedExample([TokenSequence(ids, list(ids))], length=len(ids))
                for ids in docs]


def collate_blocks(blocks: list[list[int]]) -> dict[str, Any]:
    """Equal-length blocks as a batch; loss on every token a block's earlier tokens predict."""
    import torch

    from ftp.components import IGNORE_INDEX

    ids = torch.tensor(blocks, dtype=torch.long)
    labels = ids.clone()
    # A block's first token is predicted by nothing: unlabelled, so that the labelled tokens
    # Trainer counts for the loss's divisor are exactly those that carry loss.
    labels[:, 0] = IGNORE_INDEX
    # The all-ones mask is free under SDPA and lets Trainer count tokens seen correctly
    # (its "non_padding" count would otherwise skip every EOS, as EOS is the pad token).
    return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}


@hookimpl
def ftp_methods() -> list[type]:
    """Register ``cpt``."""
    return [CPT]
