"""A stage's rows as its method sees them: their lengths, the longest batch it keeps, fit.

`row_costs` measures every training row as the stage's method trains on it: through the
method's own `Method.tokenize_examples` when it has one (exact: truncation at max_length,
rows it drops), else through the chat template with the method's ``max_length`` as a cap
(methods whose TRL trainer tokenizes). `probe_order` ranks the rows for the probe so that the
rows a method keeps come first: a row that fills the cap is ranked after the rows that fit
whole, because a method may drop it (the reward trainer drops pairs over max_length) and a
probe on rows the method drops measures nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class RowCost:
    """One training row's cost.

    Attributes:
        index: Its index in the stage's training rows.
        length: Tokens of its longest sequence as trained (after truncation).
        whole: Tokens of its longest sequence before truncation.
        sequences: Sequences it becomes (2 for a preference pair).
        labelled: Tokens that carry loss, over its sequences (None: unknown).
        kept: True/False when the method says whether it trains on the row; None when only
            the trainer knows.

    """

    index: int
    length: int
    whole: int
    sequences: int = 1
    labelled: int | None = None
    kept: bool | None = None


@dataclass
class Costs:
    """Every row's cost and how they were measured.

    Attributes:
        rows: One `RowCost` per training row.
        exact: Whether the method's own tokenization measured them.
        cap: The method's max_length (or block_size for packed text), or None.
        packed: Whether the method packs the text into blocks of ``cap`` tokens (cpt).
        truncated: Rows longer than the cap.
        template_tokens: Tokens the chat template adds per row, on average (None: no
            template in use).

    """

    rows: list[RowCost]
    exact: bool
    cap: int | None
    packed: bool = False
    truncated: int = 0
    template_tokens: float | None = None

    def longest(self, order: list[int], batch: int) -> int:
        """The longest sequence among the first ``batch`` rows of ``order``."""
        by_index = {r.index: r for r in self.rows}
        if self.packed and self.cap:
            return self.cap
        picked = [by_index[i].length for i in order[:batch]]
        return max(picked, default=0)

    def labelled_fraction(self, order: list[int], batch: int) -> float | None:
        """The share of the first ``batch`` rows' tokens that carry loss (None: unknown)."""
        by_index = {r.index: r for r in self.rows}
        picked = [by_index[i] for i in order[:batch]]
        tokens = sum(r.length * r.sequences for r in picked)
        if not tokens or any(r.labelled is None for r in picked):
            return None
        return sum(r.labelled or 0 for r in picked) / tokens

    def sequences(self) -> int:
        """Sequences per row (the most any row has)."""
        return max((r.sequences for r in self.rows), default=1)


def method_cap(config: Any) -> tuple[int | None, bool]:
    """The method's length cap, and whether the text is packed into blocks of it.

    The cap is ``max_length``, or ``block_size`` for packed text (cpt), or a GRPO prompt and
    completion together.
    """
    block = getattr(config, "block_size", None)
    if isinstance(block, int):
        return block, True
    cap = getattr(config, "max_length", None)
    if isinstance(cap, int):
        return cap, False
    prompt = getattr(config, "max_prompt_length", None)
    completion = getattr(config, "max_completion_length", None)
    if isinstance(completion, int):  # GRPO: a prompt and a generated completion
        return (prompt or 512) + completion, False
    return None, False


def row_costs(method: Any, tokenizer: Any, records: Sequence[dict[str, Any]]) -> Costs:
    """Measure every row of ``records`` as ``method`` trains on it (see the module)."""
    cap, packed = method_cap(method.config)
    examples = method.tokenize_examples(tokenizer, records)
    plain = [_plain_tokens(tokenizer, r) for r in records]
    if examples is not None:
        rows = []
        for i, ex in enumerate(examples):
            lengths = [len(seq.input_ids) for seq in ex.sequences] or [0]
            rows.append(RowCost(i, max(lengths), max(ex.length, max(lengths)),
                                max(len(ex.sequences), 1),
                                sum(seq.trained for seq in ex.sequences), not ex.dropped))
        truncated = sum(1 for ex in examples if ex.truncated)
        if packed:
            truncated = 0  # blocks cut the stream, not the rows
        overhead = [sum(len(seq.input_ids) for seq in ex.sequences[:1]) - sum(p[:1])
                    for ex, p in zip(examples, plain, strict=True) if ex.sequences]
        template = _mean(overhead) if _has_template_rows(records) else None
        return Costs(rows, True, cap, packed, truncated, template)
    rows = []
    overhead = []
    for i, record in enumerate(records):
        seqs = _template_tokens(tokenizer, record)
        lengths = seqs or plain[i]
        longest = max(lengths, default=0)
        if seqs:
            overhead.append(seqs[0] - plain[i][0])
        length = min(longest, cap) if cap else longest
        rows.append(RowCost(i, length, longest, max(len(lengths), 1),
                            kept=_fitted(method.config) if cap and longest > cap else None))
    truncated = sum(1 for r in rows if cap and r.whole > cap)
    return Costs(rows, False, cap, packed, truncated,
                 _mean(overhead) if overhead else None)


def _fitted(config: Any) -> bool | None:
    """Whether a method that fits over-long rows itself trains on a row the cap cuts.

    A pair method with ``truncation_mode`` (orpo, simpo: `ftp_builtin.methods.pairs.fit_rows`)
    keeps a cut row with ``keep_end`` (the prompt loses its start, the answers stay), leaves
    it out with ``drop``; with ``keep_start`` a prompt that fills the cap leaves no answer,
    which only the trainer sees (None). None too for a method without the option.
    """
    mode = getattr(config, "truncation_mode", None)
    return {"keep_end": True, "drop": False}.get(mode) if isinstance(mode, str) else None


def probe_order(costs: Costs) -> list[int]:
    """Row indices, the longest rows the method keeps first.

    Rows the method says it drops come last. Where only the trainer knows (``kept`` None),
    rows that fit under the cap whole come first, longest first, then those the cap cuts,
    least cut first: they cost the same per step as any other cut row, and are the likeliest
    to be kept by a trainer that drops over-long rows or prompts.
    """
    def key(r: RowCost) -> tuple[int, int, int]:
        if r.kept is False:
            return (2, -r.length, r.index)
        if r.kept is None and costs.cap and r.whole > costs.cap:
            return (1, r.whole, r.index)
        return (0, -r.length, r.index)

    return [r.index for r in sorted(costs.rows, key=key)]


def kept_rows(costs: Costs) -> int:
    """How many rows the method trains on (those it does not say it drops)."""
    return sum(1 for r in costs.rows if r.kept is not False)


def stream_tokens(costs: Costs) -> int:
    """Tokens of every kept row (for packed text: the stream cut into blocks)."""
    return sum(r.whole if costs.packed else r.length for r in costs.rows if r.kept is not False)


#: Scripts written without spaces between words, whose every character counts as a word
#: (as word counters do for them): Han (CJK ideographs, extensions and compatibility),
#: Hiragana, Katakana (and its half-width forms), Hangul syllables and jamo.
_EACH_A_WORD = ("\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
                "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f"
                "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f")
#: One such character, or a run of other word characters (letters, digits, underscore).
_WORD = re.compile(f"[{_EACH_A_WORD}]|[^\\W{_EACH_A_WORD}]+")


def count_words(text: str) -> int:
    """Words in ``text``, Unicode-aware.

    Each Han, Hiragana, Katakana or Hangul character is a word; elsewhere a word is a run of
    letters, digits or underscores (``it's`` is two, ``3.14`` two); punctuation and spaces
    are no words. Whitespace-splitting counted a Chinese sentence as one word.
    """
    return len(_WORD.findall(text))


def tokens_per_word(tokenizer: Any, records: Sequence[dict[str, Any]], limit: int = 2000
                    ) -> float | None:
    """Tokens per word (`count_words`) over the rows' text (the first ``limit`` rows)."""
    words = tokens = 0
    for record in records[:limit]:
        text = " ".join(_strings(record))
        words += count_words(text)
        tokens += len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
    return tokens / words if words else None


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def _strings(value: Any) -> list[str]:
    """Every string a record holds (content of messages, prompt, answers, text), in order."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        keys = ("content", "text", "prompt", "completion", "chosen", "rejected", "messages")
        found = [k for k in keys if k in value]
        return [s for k in found for s in _strings(value[k])]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _sequences(record: dict[str, Any]) -> list[list[Any]]:
    """A record's trained sequences as lists of parts (prompt + answer for each answer)."""
    if "chosen" in record and "rejected" in record:
        prompt = record.get("prompt", [])
        return [[prompt, record["chosen"]], [prompt, record["rejected"]]]
    if "completion" in record:
        return [[record.get("prompt", ""), record["completion"]]]
    return [[record]]


def _plain_tokens(tokenizer: Any, record: dict[str, Any]) -> list[int]:
    """Tokens of each sequence's text alone, with no template or special tokens."""
    out = []
    for parts in _sequences(record):
        text = " ".join(_strings(parts))
        out.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0)
    return out


def _has_template_rows(records: Sequence[dict[str, Any]]) -> bool:
    first = records[0] if records else {}
    return "messages" in first or isinstance(first.get("prompt"), list)


def _template_tokens(tokenizer: Any, record: dict[str, Any]) -> list[int]:
    """Tokens of each sequence through the chat template, or [] for non-chat rows."""
    out = []
    for parts in _sequences(record):
        messages: list[Any] = []
        for part in parts:
            if isinstance(part, dict) and isinstance(part.get("messages"), list):
                messages.extend(part["messages"])
            elif isinstance(part, list):
                messages.extend(part)
            else:
                return []
        if not messages or getattr(tokenizer, "chat_template", None) is None:
            return []
        try:
            ids = tokenizer.apply_chat_template(messages, tokenize=True)
        except Exception:  # a template that refuses a role: fall back to plain counts
            return []
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        out.append(len(ids))
    return out
