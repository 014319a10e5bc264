"""Preference data after TRL tokenized it: fitted into ``max_length`` the ftp way, and counted.

TRL's DPO and KTO trainers tokenize pairs into ``prompt_ids`` and one ``*_ids`` column per
answer, then handle length themselves: KTO (and DPO's ``keep_start``) drop a pair whose
prompt alone fills ``max_length``, silently. ftp tokenizes through TRL with that turned off
(`untruncated`) and fits every row with `ftp_builtin.truncation.fit_pair` instead, so that the
pair keeps the end of its prompt (``keep_end``), and what was cut, dropped or skipped is said
on the terminal, in metrics.jsonl, data.json and results.json. Every row then fits
``max_length``, so TRL's collator has nothing left to cut.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ftp import TrainContext, UserError
from ftp_builtin.truncation import TruncationMode, fit_pair

#: The column that carries each row's index into ``ctx.train`` through TRL's tokenization.
INDEX = "ftp_index"
#: KTO's mismatched completions for its KL term: cut to fit, never a reason to cut the prompt.
KL_COLUMN = "KL_completion_ids"


@dataclass
class Fitted:
    """What fitting did to a tokenized preference dataset.

    Attributes:
        rows: The rows to train on, each within ``max_length``.
        given: Rows TRL made of the records (a pair is two rows for KTO).
        truncated: Rows that were cut.
        dropped: Rows left out by ``truncation_mode = "drop"``.
        skipped: Rows left out as bad (no answer token left), with ``on_bad_rows = "skip"``.
        tokens: Tokens of ``prompt + answer`` over every answer of the kept rows.
        longest: The longest ``prompt + answer`` before fitting.

    """

    rows: list[dict[str, Any]]
    given: int
    truncated: int = 0
    dropped: int = 0
    skipped: int = 0
    tokens: int = 0
    longest: int = 0


@contextlib.contextmanager
def untruncated(args: Any) -> Iterator[None]:
    """TRL's arguments with ``max_length`` unset for the duration (tokenizing only).

    The trainer's collator keeps the real ``max_length``; only TRL's dataset preparation,
    which would drop whole pairs, is kept from seeing it.
    """
    limit = args.max_length
    args.max_length = None
    try:
        yield
    finally:
        args.max_length = limit


def fit_rows(ctx: TrainContext, rows: list[dict[str, Any]], answers: tuple[str, ...],
             max_length: int, mode: TruncationMode) -> Fitted:
    """Fit each tokenized row into ``max_length``; report the rows left with nothing to learn.

    Raises:
        UserError: naming the source file and line of each row left with no answer token
            (``keep_start`` with a prompt that fills ``max_length``), unless the dataset's
            ``on_bad_rows`` is ``"skip"``; and when no row is left at all.

    """
    out = Fitted(rows=[], given=len(rows))
    kept: list[tuple[int, dict[str, Any]]] = []
    empty: dict[int, str] = {}
    for row in rows:
        prompt = row["prompt_ids"]
        whole = {a: row[f"{a}_ids"] for a in answers}
        length = len(prompt) + max(len(ids) for ids in whole.values())
        out.longest = max(out.longest, length)
        fitted = fit_pair(prompt, whole, max_length, mode)
        if fitted.dropped:
            out.dropped += 1
            continue
        out.truncated += fitted.truncated
        if not fitted.trainable:
            empty.setdefault(row[INDEX], f"its prompt alone has {len(prompt)} tokens")
        new = {k: v for k, v in row.items() if k != INDEX}
        new["prompt_ids"] = list(fitted.prompt)
        for a in answers:
            new[f"{a}_ids"] = list(fitted.answers[a])
        if KL_COLUMN in new:
            new[KL_COLUMN] = new[KL_COLUMN][: max(max_length - len(fitted.prompt), 0)]
        kept.append((row[INDEX], new))
    skip = set(ctx.bad_rows(
        f"no answer token after truncation to max_length={max_length} "
        f"(truncation_mode = {mode!r})", sorted(empty.items()),
        "raise max_length, use truncation_mode = \"keep_end\""))
    for index, new in kept:
        if index in skip:
            out.skipped += 1
            continue
        out.rows.append(new)
        out.tokens += sum(len(new["prompt_ids"]) + len(new[f"{a}_ids"]) for a in answers)
    if not out.rows:
        raise UserError(f"no training pair is left to learn from at max_length={max_length} "
                        f"(truncation_mode = {mode!r}); raise max_length")
    return out


def report(ctx: TrainContext, fitted: Fitted, max_length: int, mode: TruncationMode,
           what: str) -> None:
    """Say on the terminal what fitting did (as sft does), and log the counts."""
    if fitted.truncated:
        how = ("their prompts were cut from the start, then the answers at their end if still "
               "needed" if mode == "keep_end" else "cut at the end")
        print(f"  warning: train: {fitted.truncated} of {fitted.given} {what} are longer than "
              f"max_length={max_length} tokens (the longest has {fitted.longest}); {how} "
              f"(truncation_mode = {mode!r})", flush=True)
    if fitted.dropped:
        print(f"  warning: train: {fitted.dropped} of {fitted.given} {what} are longer than "
              f"max_length={max_length} tokens and were left out (truncation_mode = 'drop')",
              flush=True)
    ctx.log({"stage": ctx.stage, "event": "tokenized", "examples": len(fitted.rows),
             "tokens": fitted.tokens, "truncated": fitted.truncated, "dropped": fitted.dropped,
             "skipped": fitted.skipped, "truncation_mode": mode, "max_length": max_length})
