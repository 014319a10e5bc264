"""Built-in evaluators ``reward`` and ``reward_accuracy``.

``reward`` asks the model each held-out prompt (the prompt-only shape, as ``grpo`` trains on)
and scores its completions with the evaluation's ``rewards`` — the same components a ``grpo``
stage uses — once greedily and ``samples`` times sampled at ``temperature``. With
``before = true`` the same numbers before training sit next to those after it.

``reward_accuracy`` judges a reward model (the ``reward`` method's output): the fraction of
held-out preference pairs whose chosen answer it scores above the rejected one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from ftp import EvalContext, Evaluator, RewardRef, Shape, StrictConfig, hookimpl
from ftp.components import unique_labels
from ftp_builtin.rewards.model import conversation_ids, score_ids


class RewardEvaluator(Evaluator):
    """Mean reward, per reward, of greedy and sampled completions to held-out prompts."""

    name = "reward"
    needs_data = True
    accepts = frozenset({Shape.PROMPT_ONLY})

    class Config(StrictConfig):
        """The rewards, and how completions are drawn."""

        rewards: list[RewardRef] = Field(
            min_length=1, description="The rewards, as in grpo: [{ reward = 'regex', "
            "pattern = '...' }, ...]; weights make the `reward` total."
        )
        max_new_tokens: int = Field(128, gt=0, description="Longest completion.")
        samples: int = Field(1, ge=0, description="Sampled completions per prompt, besides "
                             "the greedy one; 0: greedy only.")
        temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
        limit: int | None = Field(None, gt=0, description="Score only the first N prompts.")
        batch_size: int = Field(8, gt=0, description="Prompts generated at once.")
        keep: int = Field(5, ge=0, description="Completions kept in results.json.")

        _distinct = field_validator("rewards")(unique_labels)

    config: Config

    def reported_metrics(self, base_dir: Path | None = None) -> tuple[str, ...]:
        """``prompts``, then per decoding: each reward by its label and the weighted total."""
        modes = ["greedy"] + (["sampled"] if self.config.samples else [])
        return ("prompts", *(f"{mode}/{name}" for mode in modes
                             for name in [ref.label for ref in self.config.rewards] + ["reward"]))

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        """Generate, score with each reward, and average per reward and decoding."""
        cfg = self.config
        rows = (ctx.data or [])[: cfg.limit]
        rewards = [(ref, ref.build()) for ref in cfg.rewards]
        metrics: dict[str, Any] = {"prompts": len(rows)}
        kept: list[dict[str, Any]] = []
        modes = [("greedy", 1, False)] + ([("sampled", cfg.samples, True)] if cfg.samples else [])
        for mode, times, sample in modes:
            prompts, completions, fields = [], [], []
            for _ in range(times):
                texts = generate(ctx, [r["prompt"] for r in rows], cfg.max_new_tokens,
                                 sample, cfg.temperature, cfg.batch_size)
                prompts += [r["prompt"] for r in rows]
                completions += texts
                fields += [{k: v for k, v in r.items() if k != "prompt"} for r in rows]
            total = [0.0] * len(completions)
            for ref, reward in rewards:
                scores = reward.score(prompts, completions, fields)
                valid = [s for s in scores if s is not None]
                metrics[f"{mode}/{ref.label}"] = sum(valid) / len(valid) if valid else None
                total = [t + ref.weight * (s or 0.0) for t, s in zip(total, scores, strict=True)]
            metrics[f"{mode}/reward"] = sum(total) / len(total) if total else None
            if mode == "greedy":
                kept = [{"prompt": p, "completion": c, "row": f}
                        for p, c, f in zip(prompts, completions, fields, strict=True)][: cfg.keep]
        return {"metrics": metrics, "samples": kept}


def generate(ctx: EvalContext, prompts: list[Any], max_new_tokens: int, sample: bool,
             temperature: float, batch_size: int) -> list[str]:
    """Completions of ``prompts`` (messages through the chat template, or plain text)."""
    import torch

    tok, model = ctx.tokenizer, ctx.model
    was_training = model.training
    model.eval()
    side, tok.padding_side = tok.padding_side, "left"  # generation continues at the right
    texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
             if isinstance(p, list) else p for p in prompts]
    out: list[str] = []
    try:
        for start in range(0, len(texts), batch_size):
            enc = tok(texts[start:start + batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(model.device)
            options: dict[str, Any] = {"do_sample": sample}
            if sample:
                options["temperature"] = temperature
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=max_new_tokens,
                                     pad_token_id=tok.pad_token_id, **options)
            new = ids[:, enc["input_ids"].shape[1]:]
            out += tok.batch_decode(new, skip_special_tokens=True)
    finally:
        tok.padding_side = side
        model.train(was_training)
    return out


class RewardAccuracy(Evaluator):
    """Fraction of held-out preference pairs a reward model scores chosen above rejected."""

    name = "reward_accuracy"
    metric_names = ("accuracy", "mean_margin", "pairs")
    needs_data = True
    accepts = frozenset({Shape.PREFERENCE})
    tasks = frozenset({"sequence-classification"})

    class Config(StrictConfig):
        """Batching and length."""

        batch_size: int = Field(8, gt=0, description="Sequences per forward pass.")
        max_length: int = Field(1024, gt=0, description="Longer sequences lose their start "
                                "(the end, where the score is read, is kept), as in training.")
        keep: int = Field(5, ge=0, description="Pairs kept in results.json.")

    config: Config

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        """Score prompt + chosen and prompt + rejected; count the pairs ordered right."""
        rows = ctx.data or []
        chosen, cut = score_conversations(ctx, [r["prompt"] + r["chosen"] for r in rows],
                                          self.config.batch_size, self.config.max_length)
        rejected, cut_too = score_conversations(ctx, [r["prompt"] + r["rejected"] for r in rows],
                                                self.config.batch_size, self.config.max_length)
        margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
        n = max(len(margins), 1)
        samples = [{"prompt": r["prompt"], "chosen_score": c, "rejected_score": j}
                   for r, c, j in zip(rows, chosen, rejected, strict=True)][: self.config.keep]
        return {"metrics": {"accuracy": sum(m > 0 for m in margins) / n,
                            "mean_margin": sum(margins) / n, "pairs": len(margins),
                            "truncated": sum(a or b for a, b in zip(cut, cut_too, strict=True))},
                "samples": samples}


def score_conversations(ctx: EvalContext, conversations: list[list[dict[str, Any]]],
                        batch_size: int, max_length: int) -> tuple[list[float], list[bool]]:
    """A reward model's score of each whole conversation, rendered and cut as training does.

    Returns:
        The scores, and whether each conversation was cut to ``max_length`` (from its start).

    """
    tok = ctx.tokenizer
    rows, cut = [], []
    for convo in conversations:
        ids, was_cut = conversation_ids(tok, convo, max_length)
        rows.append(ids)
        cut.append(was_cut)
    return score_ids(ctx.model, tok.pad_token_id, rows, batch_size), cut


@hookimpl
def ftp_evaluators() -> list[type]:
    """Register ``reward`` and ``reward_accuracy``."""
    return [RewardEvaluator, RewardAccuracy]
