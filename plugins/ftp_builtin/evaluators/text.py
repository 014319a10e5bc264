"""Built-in evaluators: ``loss`` (loss and perplexity on data) and ``generate`` (greedy answers)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import Field

from ftp import EvalContext, Evaluator, Shape, StrictConfig, hookimpl
from ftp_builtin.evaluators.scoring import score_rows
from ftp_builtin.tokenize import tokenize_records


class Loss(Evaluator):
    """Mean token loss and perplexity on a dataset (held-out split by default)."""

    name = "loss"
    metric_names = ("loss", "perplexity", "tokens", "examples", "skipped_examples")
    needs_data = True
    accepts = frozenset({Shape.CONVERSATIONAL, Shape.PROMPT_COMPLETION, Shape.LANGUAGE_MODELING})

    class Config(StrictConfig):
        """How the data is tokenized and batched."""

        batch_size: int = Field(8, gt=0, description="Rows per forward pass.")
        max_length: int = Field(1024, gt=0, description="Longer rows are truncated (tokens).")
        assistant_only_loss: bool = Field(True, description="Score assistant tokens only.")

    config: Config

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        """Sum the per-token loss over the data; report the mean and exp(mean).

        Rows are scored in passes whose logits fit a bounded budget (`scoring.score_rows`).
        """
        cfg = self.config
        # A row with nothing left to score after truncation is counted, not fatal: this may
        # run after a long training.
        data = tokenize_records(ctx.tokenizer, ctx.data or [], cfg.max_length,
                                cfg.assistant_only_loss, skip_empty=True)
        pad = ctx.tokenizer.pad_token_id or 0
        scored = [s for s in score_rows(ctx.model, data.rows, pad, cfg.batch_size)
                  if s is not None]
        total = -sum(s.logp for s in scored)
        count = sum(s.tokens for s in scored)
        mean = total / count if count else float("nan")
        return {"metrics": {"loss": mean, "perplexity": math.exp(mean) if count else float("nan"),
                            "tokens": count, "examples": len(data.rows),
                            "skipped_examples": data.dropped}}


class Generate(Evaluator):
    """Greedy answers to listed prompts, recorded with whether each stopped at EOS."""

    name = "generate"
    metric_names = ("stopped_fraction", "mean_new_tokens", "expected_fraction")

    class Config(StrictConfig):
        """Prompts and generation limits."""

        prompts: list[str] = Field(min_length=1, description="Questions to ask the model.")
        max_new_tokens: int = Field(128, gt=0, description="Longest answer generated.")
        system_prompt: str | None = Field(None, description="Sent before each prompt.")
        expect: list[str] = Field(
            default_factory=list,
            description="Strings an answer should contain (case-insensitive); reported as "
            "the fraction of answers containing all of them.",
        )

    config: Config

    def reported_metrics(self, base_dir: Path | None = None) -> tuple[str, ...]:
        """``expected_fraction`` only when ``expect`` names strings to look for."""
        return tuple(m for m in self.metric_names
                     if m != "expected_fraction" or self.config.expect)

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        """Ask each prompt through the chat template and decode the greedy answer."""
        import torch

        cfg = self.config
        tok = ctx.tokenizer
        model = ctx.model
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        samples = []
        for prompt in cfg.prompts:
            if getattr(tok, "chat_template", None):
                messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt \
                    else []
                messages.append({"role": "user", "content": prompt})
                enc = tok.apply_chat_template(messages, add_generation_prompt=True,
                                              return_tensors="pt", return_dict=True)
            else:
                enc = tok(prompt, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=cfg.max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            new = out[0, enc["input_ids"].shape[1]:].tolist()
            stopped = bool(new) and new[-1] == tok.eos_token_id
            answer = tok.decode(new, skip_special_tokens=True).strip()
            sample: dict[str, Any] = {"prompt": prompt, "answer": answer, "stopped": stopped,
                                      "new_tokens": len(new)}
            if cfg.expect:
                sample["expected"] = all(e.lower() in answer.lower() for e in cfg.expect)
            samples.append(sample)
        model.train(was_training)
        metrics: dict[str, Any] = {
            "stopped_fraction": sum(s["stopped"] for s in samples) / len(samples),
            "mean_new_tokens": sum(s["new_tokens"] for s in samples) / len(samples),
        }
        if cfg.expect:
            metrics["expected_fraction"] = sum(s["expected"] for s in samples) / len(samples)
        return {"metrics": metrics, "samples": samples}


@hookimpl
def ftp_evaluators() -> list[type]:
    """Register ``loss`` and ``generate``."""
    return [Loss, Generate]
