"""``perplexity``: how well a model predicts held-out raw text, tokenized as ``cpt`` trains.

The texts are joined with one EOS after each and cut into blocks of ``block_size`` tokens
(``ftp_builtin.blocks``), the last, shorter block kept so that every token is scored. Each
block is scored on its own (no stride or overlap), so the first token of a block is context
only. The result is the mean cross-entropy over every predicted token and its exponential.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from ftp import IGNORE_INDEX, EvalContext, Evaluator, Shape, StrictConfig, hookimpl
from ftp_builtin.blocks import check_block_size, pack
from ftp_builtin.evaluators.scoring import score_rows


class Perplexity(Evaluator):
    """Perplexity on raw text in fixed-length blocks, as continued pretraining sees it."""

    name = "perplexity"
    metric_names = ("perplexity", "loss", "tokens", "blocks", "documents")
    needs_data = True
    accepts = frozenset({Shape.LANGUAGE_MODELING})

    class Config(StrictConfig):
        """Block length and batch size."""

        block_size: int = Field(
            512, ge=2, description="Tokens per block; use the cpt stage's block_size."
        )
        batch_size: int = Field(8, gt=0, description="Blocks per forward pass.")
        max_blocks: int | None = Field(
            None, gt=0, description="Score only the first N blocks (a rehearsal scores a few).")

    config: Config

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        """Sum the token losses over all blocks; report the mean and exp(mean).

        Blocks are scored in passes whose logits fit a bounded budget (`scoring.score_rows`):
        at most ``batch_size`` blocks, fewer when their logits would not fit.
        """
        cfg = self.config
        model = ctx.model
        check_block_size(model, cfg.block_size)
        packed = pack(ctx.tokenizer, [r["text"] for r in ctx.data or []], cfg.block_size,
                      keep_last=True)
        # Every token but a block's first is predicted and scored.
        rows = [{"input_ids": block, "labels": [IGNORE_INDEX, *block[1:]]}
                for block in packed.blocks[:cfg.max_blocks]]
        pad = ctx.tokenizer.pad_token_id or 0
        scored = [s for s in score_rows(model, rows, pad, cfg.batch_size) if s is not None]
        total = -sum(s.logp for s in scored)
        count = sum(s.tokens for s in scored)
        mean = total / count if count else float("nan")
        return {"metrics": {
            "perplexity": math.exp(mean) if count else float("nan"),
            "loss": mean,
            "tokens": count,
            "blocks": len(rows),
            "documents": packed.documents,
        }}


@hookimpl
def ftp_evaluators() -> list[type]:
    """Register ``perplexity``."""
    return [Perplexity]
