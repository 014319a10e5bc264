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

from ftp import EvalContext, Evaluator, Shape, StrictConfig, hookimpl
from ftp_builtin.blocks import check_block_size, pack


class Perplexity(Evaluator):
    """Perplexity on raw text in fixed-length blocks, as continued pretraining sees it."""

    name = "perplexity"
    needs_data = True
    accepts = frozenset({Shape.LANGUAGE_MODELING})

    class Config(StrictConfig):
        """Block length and batch size."""

        block_size: int = Field(
            512, ge=2, description="Tokens per block; use the cpt stage's block_size."
        )
        batch_size: int = Field(8, gt=0, description="Blocks per forward pass.")

    config: Config

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        """Sum the token losses over all blocks; report the mean and exp(mean)."""
        import torch
        import torch.nn.functional as F

        cfg = self.config
        model = ctx.model
        check_block_size(model, cfg.block_size)
        packed = pack(ctx.tokenizer, [r["text"] for r in ctx.data or []], cfg.block_size,
                      keep_last=True)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        # Full blocks in batches; the last one may be shorter, so it goes alone (no padding).
        batches = [packed.blocks[i:i + cfg.batch_size]
                   for i in range(0, len(packed.blocks), cfg.batch_size)]
        if batches and len(batches[-1][-1]) != len(batches[-1][0]):
            batches[-1:] = [batches[-1][:-1], batches[-1][-1:]]
        try:
            with torch.no_grad():
                for batch in batches:
                    if not batch or len(batch[0]) < 2:  # one token predicts nothing
                        continue
                    ids = torch.tensor(batch, dtype=torch.long, device=device)
                    logits = model(input_ids=ids, use_cache=False).logits
                    for row in range(ids.size(0)):  # one row at a time: no full fp32 copy
                        total += F.cross_entropy(logits[row, :-1].float(), ids[row, 1:],
                                                 reduction="sum").item()
                    count += ids[:, 1:].numel()
        finally:
            model.train(was_training)
        mean = total / count if count else float("nan")
        return {"metrics": {
            "perplexity": math.exp(mean) if count else float("nan"),
            "loss": mean,
            "tokens": count,
            "blocks": len(packed.blocks),
            "documents": packed.documents,
        }}


@hookimpl
def ftp_evaluators() -> list[type]:
    """Register ``perplexity``."""
    return [Perplexity]
