"""``template-exact-match``: greedy answers scored by exact match and token F1 (SQuAD's)."""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any

from pydantic import Field

from ftp import EvalContext, Evaluator, Shape, StrictConfig


class ExactMatch(Evaluator):
    """Exact match and token F1 of greedy answers against reference completions."""

    name = "template-exact-match"
    accepts = frozenset({Shape.PROMPT_COMPLETION})
    needs_data = True
    # What `evaluate` reports: `[[evaluate]] require` is checked against these names.
    metric_names = ("exact_match", "f1", "rows")

    class Config(StrictConfig):
        """How many rows and how long an answer."""

        max_new_tokens: int = Field(32, ge=1, description="Longest answer generated.")
        limit: int | None = Field(None, ge=1, description="Score only the first N rows.")
        samples: int = Field(5, ge=0, description="How many answers to keep in results.json.")

    config: Config

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        """Generate an answer per row, greedily, and score it against the completion."""
        import torch

        cfg = self.config
        rows = (ctx.data or [])[: cfg.limit]
        tok, model = ctx.tokenizer, ctx.model
        model.eval()
        exact, f1, samples = 0.0, 0.0, []
        for row in rows:
            enc = tok(row["prompt"], return_tensors="pt", add_special_tokens=False)
            enc = enc.to(model.device)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=cfg.max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
            answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            answer = answer.strip().split("\n")[0]  # the answer ends at the line's end
            exact += float(normalize(answer) == normalize(row["completion"]))
            f1 += token_f1(answer, row["completion"])
            if len(samples) < cfg.samples:
                samples.append({"prompt": row["prompt"], "answer": answer,
                                "reference": row["completion"].strip()})
        n = max(len(rows), 1)
        return {"metrics": {"exact_match": exact / n, "f1": f1 / n, "rows": len(rows)},
                "samples": samples}


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's normalisation)."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the normalised words of ``prediction`` against ``reference``."""
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or common == 0:
        return float(pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)
