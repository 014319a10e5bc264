"""Fitting a preference pair (a prompt and its answers) into ``max_length`` tokens.

DPO and KTO train on ``prompt + answer`` for every answer of a pair, and the ``preference``
evaluator scores the same sequences, so all three cut a pair the same way, chosen by
``truncation_mode``:

- ``keep_end`` (the default): the prompt loses its *start*, so the end of the conversation,
  where the question being answered is, survives. It is cut just enough for the longest answer
  to fit whole; when that answer is so long that the prompt would keep less than half of
  ``max_length``, the prompt keeps its last ``max_length // 2`` tokens (or all of them, if
  fewer) and the answers are cut at their end to fill the rest. Every answer keeps tokens to
  learn from, so no pair is lost.
- ``keep_start``: the prompt is kept from its start and each ``prompt + answer`` is cut at the
  end (TRL's ``keep_start``). A pair whose prompt alone fills ``max_length`` keeps no answer
  token: it is a bad row (``on_bad_rows``).
- ``drop``: a pair longer than ``max_length`` is left out whole, and counted.

The same prompt is shared by every answer of a pair, so each answer still directly follows
the (cut) prompt it answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

TruncationMode = Literal["keep_end", "keep_start", "drop"]

#: For the pipeline reference (``Field(description=...)`` of the methods and the evaluator).
TRUNCATION_HELP = (
    "How a pair longer than max_length is fitted: 'keep_end' cuts the prompt from its start "
    "(the question at its end survives), then the answers at their end if still needed; "
    "'keep_start' cuts prompt + answer at the end (a prompt that fills max_length leaves "
    "nothing to learn: a bad row); 'drop' leaves the pair out."
)


@dataclass
class FittedPair(Generic[T]):
    """A pair after `fit_pair`.

    Attributes:
        prompt: The prompt's tokens that are kept.
        answers: Each answer's tokens that are kept, by name.
        truncated: Whether anything was cut.
        dropped: Left out whole (``drop`` mode and too long).

    """

    prompt: Sequence[T]
    answers: dict[str, Sequence[T]]
    truncated: bool = False
    dropped: bool = False

    @property
    def trainable(self) -> bool:
        """Whether every answer keeps at least one token (something to learn from or score)."""
        return not self.dropped and all(len(a) > 0 for a in self.answers.values())


def fit_pair(prompt: Sequence[T], answers: dict[str, Sequence[T]], max_length: int,
             mode: TruncationMode) -> FittedPair[T]:
    """Fit ``prompt + answer`` for every answer into ``max_length`` (see the module docstring).

    Args:
        prompt: The prompt's tokens (any items: ids, or (id, label) pairs).
        answers: Each answer's tokens, by name.
        max_length: The most tokens ``prompt + answer`` may have.
        mode: ``keep_end``, ``keep_start`` or ``drop``.

    Returns:
        What is kept, and whether the pair was cut or dropped.

    """
    longest = max((len(a) for a in answers.values()), default=0)
    if len(prompt) + longest <= max_length:
        return FittedPair(prompt, dict(answers))
    if mode == "drop":
        return FittedPair(prompt, dict(answers), truncated=False, dropped=True)
    if mode == "keep_start":
        kept = prompt[:max_length]
    else:
        floor = min(len(prompt), max_length // 2)
        keep = min(len(prompt), max(max_length - longest, floor))
        kept = prompt[len(prompt) - keep:]
    room = max_length - len(kept)
    return FittedPair(kept, {name: a[:room] for name, a in answers.items()}, truncated=True)
