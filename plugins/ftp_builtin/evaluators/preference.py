"""Built-in evaluator ``preference``: how often the model finds the chosen answer more likely.

For each held-out pair, the log-probability of each answer given its prompt is the sum of the
log-probabilities of the answer's tokens, the conversation rendered through the chat template
with the same masks as training (``ftp_builtin.tokenize.conversation``: the last assistant
turn, through its end-of-turn token). A pair counts as preferred when
``logp(chosen) - logp(rejected) > 0``.

A pair longer than ``max_length`` is fitted as DPO training fits it (``truncation_mode``,
``ftp_builtin.truncation``): by default the prompt loses its start. ``truncated``, ``dropped``
(``drop``) and ``skipped`` (no answer token left, ``keep_start``) count the pairs concerned.

DPO's own "reward accuracy" compares that margin with the reference model's. When this same
evaluation ran earlier in the pipeline (``before = true``, or after an earlier stage), that
earlier model is the reference: for every pair scored both times the reward margin is
``(logp(chosen) - ref_logp(chosen)) - (logp(rejected) - ref_logp(rejected))`` — DPO's implicit
reward margin divided by beta — and ``reward_accuracy`` is the fraction of pairs where it is
positive, ``mean_reward_margin`` its mean, ``reference`` the stage the reference was measured
after (``base``: before training).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ftp import IGNORE_INDEX, EvalContext, Evaluator, Shape, StrictConfig, UserError, hookimpl
from ftp_builtin.evaluators.scoring import score_rows
from ftp_builtin.tokenize import (
    common_prefix,
    conversation,
    render,
    require_chat_template,
)
from ftp_builtin.truncation import TRUNCATION_HELP, TruncationMode, fit_pair


def answer_tokens(tokenizer: Any, prompt: list[dict[str, str]],
                  answer: list[dict[str, str]]) -> dict[str, list[int]]:
    """Token ids of ``prompt + answer`` with labels on the answer's tokens only.

    Earlier assistant turns of a multi-turn prompt are context, not scored.
    """
    row = conversation(tokenizer, prompt + answer)
    start = common_prefix(row["input_ids"], render(tokenizer, prompt, generation_prompt=True))
    labels = [IGNORE_INDEX] * start + row["labels"][start:]
    return {"input_ids": row["input_ids"], "labels": labels}


def fitted_pair(tokenizer: Any, pair: dict[str, Any], max_length: int, mode: TruncationMode
                ) -> tuple[bool, list[dict[str, list[int]]]] | None:
    """Both answers' rows, fitted into ``max_length`` as training fits them (`fit_pair`).

    Returns:
        Whether the pair was cut, and the chosen and rejected rows; None when ``drop`` left
        the pair out.

    """
    both = [answer_tokens(tokenizer, pair["prompt"], pair[k]) for k in ("chosen", "rejected")]
    # The prompt both rows share ends where the first of them starts its answer.
    shared = min(next((j for j, lab in enumerate(r["labels"]) if lab != IGNORE_INDEX),
                      len(r["labels"])) for r in both)
    tokens = [list(zip(r["input_ids"], r["labels"], strict=True)) for r in both]
    fitted = fit_pair(tokens[0][:shared], {"chosen": tokens[0][shared:],
                                           "rejected": tokens[1][shared:]}, max_length, mode)
    if fitted.dropped:
        return None
    rows = []
    for name in ("chosen", "rejected"):
        kept = list(fitted.prompt) + list(fitted.answers[name])
        rows.append({"input_ids": [t for t, _ in kept], "labels": [lab for _, lab in kept]})
    return fitted.truncated, rows


class Preference(Evaluator):
    """Fraction of preference pairs whose chosen answer the model finds more likely."""

    name = "preference"
    metric_names = ("accuracy", "mean_margin", "accuracy_per_token", "chosen_logp",
                    "rejected_logp", "chosen_logp_per_token", "rejected_logp_per_token",
                    "pairs", "skipped", "truncated", "dropped", "reward_accuracy",
                    "mean_reward_margin")
    needs_data = True
    accepts = frozenset({Shape.PREFERENCE})

    class Config(StrictConfig):
        """How the pairs are tokenized and batched."""

        batch_size: int = Field(4, gt=0, description="Sequences per forward pass.")
        max_length: int = Field(
            1024, gt=0, description="The most tokens of prompt + answer; longer pairs are "
            "fitted by truncation_mode, as DPO training fits them."
        )
        truncation_mode: TruncationMode = Field("keep_end", description=TRUNCATION_HELP)

    config: Config

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        """Score both answers of every pair; report accuracy, margins and per-token log-probs."""
        cfg = self.config
        tok = ctx.tokenizer
        require_chat_template(tok)
        rows: list[dict[str, list[int]]] = []
        truncated = skipped = dropped = 0
        kept: list[int] = []
        for i, pair in enumerate(ctx.data or []):
            both = fitted_pair(tok, pair, cfg.max_length, cfg.truncation_mode)
            if both is None:
                dropped += 1
                continue
            truncated += both[0]
            if any(all(lab == IGNORE_INDEX for lab in r["labels"][1:]) for r in both[1]):
                skipped += 1
                continue
            kept.append(i)
            rows.extend(both[1])
        if not kept:
            raise UserError(f"no pair to score at max_length={cfg.max_length} (truncation_mode "
                            f"= {cfg.truncation_mode!r}): {dropped} dropped, {skipped} with no "
                            "answer token left")
        logps, counts = _sequence_logps(ctx.model, tok, rows, cfg.batch_size)

        samples = []
        for n, i in enumerate(kept):
            c, r = 2 * n, 2 * n + 1
            samples.append({"pair": i, "chosen_logp": logps[c], "rejected_logp": logps[r],
                            "margin": logps[c] - logps[r], "chosen_tokens": counts[c],
                            "rejected_tokens": counts[r]})
        pairs = len(samples)
        chosen_tokens = sum(s["chosen_tokens"] for s in samples)
        rejected_tokens = sum(s["rejected_tokens"] for s in samples)
        metrics = {
            "accuracy": sum(s["margin"] > 0 for s in samples) / pairs,
            "mean_margin": sum(s["margin"] for s in samples) / pairs,
            "accuracy_per_token": sum(
                s["chosen_logp"] / s["chosen_tokens"] > s["rejected_logp"] / s["rejected_tokens"]
                for s in samples) / pairs,
            "chosen_logp": sum(s["chosen_logp"] for s in samples) / pairs,
            "rejected_logp": sum(s["rejected_logp"] for s in samples) / pairs,
            "chosen_logp_per_token": sum(s["chosen_logp"] for s in samples) / chosen_tokens,
            "rejected_logp_per_token": sum(s["rejected_logp"] for s in samples) / rejected_tokens,
            "pairs": pairs,
            "skipped": skipped,
            "truncated": truncated,
            "dropped": dropped,
        }
        metrics.update(_relative_to_reference(samples, ctx.previous, ctx.previous_stage))
        return {"metrics": metrics, "samples": samples}


def _relative_to_reference(samples: list[dict[str, Any]], previous: dict[str, Any] | None,
                           previous_stage: str | None) -> dict[str, Any]:
    """Reward accuracy and mean reward margin against the earlier result's per-pair log-probs.

    Empty when there is no earlier result (the model is its own reference then).
    """
    before = {s["pair"]: s for s in (previous or {}).get("samples") or [] if "pair" in s}
    margins = [
        (s["chosen_logp"] - before[s["pair"]]["chosen_logp"])
        - (s["rejected_logp"] - before[s["pair"]]["rejected_logp"])
        for s in samples if s["pair"] in before
    ]
    if not margins:
        return {}
    return {
        "reward_accuracy": sum(m > 0 for m in margins) / len(margins),
        "mean_reward_margin": sum(margins) / len(margins),
        "reference": previous_stage,
    }


def _sequence_logps(model: Any, tokenizer: Any, rows: list[dict[str, list[int]]],
                    batch_size: int) -> tuple[list[float], list[int]]:
    """Sum of log-probabilities of each row's labelled tokens, and how many there are.

    Scored in passes whose logits fit a bounded budget (`scoring.score_rows`); every row here
    has a labelled token (pairs without one were skipped).
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scored = score_rows(model, rows, pad, batch_size)
    return ([s.logp if s else 0.0 for s in scored], [s.tokens if s else 0 for s in scored])


@hookimpl
def ftp_evaluators() -> list[type]:
    """Register ``preference``."""
    return [Preference]
