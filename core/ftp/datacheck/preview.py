"""``ftp data preview``: the first examples as the model will see them.

Each example is shown as decoded text after formatting and tokenization by the stage's method
(`Method.tokenize_examples`), special tokens included as their literal text (``<|im_start|>``).
Tokens that carry loss are marked: on a terminal in green (the rest dimmed); otherwise
between ``«`` and ``»``. Every sequence gets its token counts, total and trained, and every
example the number of its assistant turns marked untrained (``weight: 0``; `ftp.turns`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ftp.components import IGNORE_INDEX, TokenizedExample, TokenSequence
from ftp.config import Pipeline
from ftp.data import load_records, prepare
from ftp.datacheck.common import Target, tokenize_examples
from ftp.errors import UserError
from ftp.turns import untrained_turns

#: Plain-text markers around tokens that carry loss.
OPEN, CLOSE = "«", "»"


@dataclass
class Segment:
    """A run of consecutive tokens with the same loss status, decoded."""

    text: str
    trained: bool
    special: bool


def segments(tokenizer: Any, seq: TokenSequence) -> list[Segment]:
    """Split a sequence into runs of trained / untrained and special / plain tokens."""
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    out: list[Segment] = []
    run: list[int] = []
    state: tuple[bool, bool] | None = None
    for tok, lab in zip(seq.input_ids, seq.labels, strict=True):
        key = (lab != IGNORE_INDEX, tok in special_ids)
        if key != state and run:
            out.append(_decode(tokenizer, run, state))  # type: ignore[arg-type]
            run = []
        state = key
        run.append(tok)
    if run:
        out.append(_decode(tokenizer, run, state))  # type: ignore[arg-type]
    return out


def _decode(tokenizer: Any, ids: list[int], state: tuple[bool, bool]) -> Segment:
    text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return Segment(text, state[0], state[1])


def plain(segs: list[Segment]) -> str:
    """The text with trained runs between ``«`` and ``»`` (adjacent runs share markers)."""
    out = []
    inside = False
    for seg in segs:
        if seg.trained and not inside:
            out.append(OPEN)
        elif not seg.trained and inside:
            out.append(CLOSE)
        inside = seg.trained
        out.append(seg.text)
    if inside:
        out.append(CLOSE)
    return "".join(out)


def styled(segs: list[Segment]) -> Any:
    """The text as a rich ``Text``: trained green, untrained dim, special tokens bold."""
    from rich.text import Text

    text = Text()
    for seg in segs:
        style = "green" if seg.trained else "dim"
        if seg.special:
            style += " bold"
        text.append(seg.text, style=style)
    return text


@dataclass
class Preview:
    """One dataset's first examples, tokenized."""

    target: Target
    rows: list[tuple[str, int]]  # (split, row index) per example
    examples: list[TokenizedExample]
    available: int  # rows in the dataset's training split (or held-out split if none)
    untrained: list[int]  # assistant turns marked untrained, per example
    warnings: list[str]  # what preparing the data noticed (ignored keys, skipped rows)


def preview(pipeline: Pipeline, target: Target, tokenizer: Any, n: int) -> Preview:
    """Load, format and tokenize the first ``n`` training rows of ``target``'s dataset.

    Raises:
        UserError: when no stage's method can tokenize the data, or on bad data.

    """
    if target.stage is None:
        raise UserError(f"data {target.name!r}: no stage trains on {target.shape} data, so "
                        "there is no training tokenization to show")
    records = load_records(target.dataset, pipeline.base_dir, pipeline.seed)
    prepared = prepare(target.dataset, records, pipeline.base_dir, pipeline.seed)
    split, rows = ("train", prepared.train) if prepared.train else ("eval", prepared.eval)
    chosen = rows[:n]
    examples = tokenize_examples(target, tokenizer, chosen)
    if examples is None:
        raise UserError(f"method {target.stage.method.entry.name!r} (plugin "
                        f"{target.stage.method.entry.plugin!r}) cannot show how it tokenizes "
                        "(it does not implement Method.tokenize_examples)")
    return Preview(target, [(split, i) for i in range(len(chosen))], examples, len(rows),
                   [untrained_turns(r) for r in chosen], prepared.warnings)


def as_json(pv: Preview, tokenizer: Any) -> dict[str, Any]:
    """A preview for machines: ids, labels (-100: no loss) and token strings per sequence."""
    examples = []
    for (split, row), ex, untrained in zip(pv.rows, pv.examples, pv.untrained, strict=True):
        seqs = [{"name": s.name, "input_ids": s.input_ids, "labels": s.labels,
                 "tokens": tokenizer.convert_ids_to_tokens(s.input_ids),
                 "total": len(s.input_ids), "trained": s.trained} for s in ex.sequences]
        examples.append({"split": split, "row": row, "length": ex.length,
                         "truncated": ex.truncated, "dropped": ex.dropped, "label": ex.label,
                         "untrained_turns": untrained, "sequences": seqs})
    stage = pv.target.stage
    return {"dataset": pv.target.name, "format": pv.target.dataset.section.format,
            "shape": pv.target.shape, "stage": stage.name if stage else None,
            "method": stage.method.entry.name if stage else None, "examples": examples}


def header(pv: Preview, index: int) -> str:
    """``── data 'x', train row 0 of 91 · truncated ──``."""
    split, row = pv.rows[index]
    ex = pv.examples[index]
    notes = []
    if ex.label is not None:
        notes.append(f"label {ex.label!r}")
    if ex.truncated:
        notes.append(f"truncated (whole: {ex.length} tokens)")
    if pv.untrained[index]:
        n = pv.untrained[index]
        notes.append(f"{n} assistant turn{'s' if n != 1 else ''} untrained (weight 0)")
    if ex.dropped:
        notes.append("dropped from training: no token carries loss")
    extra = "".join(f" · {n}" for n in notes)
    return f"── data {pv.target.name!r}, {split} row {row} of {pv.available}{extra} ──"


def counts(seq: TokenSequence) -> str:
    """``chosen: 120 tokens, 31 trained``."""
    who = f"{seq.name}: " if seq.name else ""
    return f"{who}{len(seq.input_ids)} tokens, {seq.trained} trained"
