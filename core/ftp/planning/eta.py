"""A stage's ETA from two timed batches: seconds per step against the tokens in the step.

The probe times steps on the longest batch the method keeps and on a typical (median
length) batch, until two consecutive steps agree (`ftp.planning.probe.steady`). Between the
two, a step's seconds are taken as linear in the tokens the step holds, ``a + b · tokens``:
on the short sequences ftp trains at, the matrix products (linear in tokens) dominate, and
the fixed part ``a`` (optimizer step, adapter bookkeeping, Python) does not shrink with the
batch. Attention's quadratic term is left out: two points cannot fit three coefficients, and
a third probe costs more than it would correct at these lengths.

The steps themselves come from the rows the method trains on, shuffled with the pipeline's
seed and cut into batches of ``batch_size`` as the trainer does, epochs over, up to
``max_steps``; a batch's tokens are its rows' lengths padded to its longest (or their sum for
padding-free training). The sum of the predicted seconds over those batches is the ETA; the
longest batch's seconds at every step is the upper bound.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ftp.planning.rows import Costs


@dataclass
class StepFit:
    """Seconds of one batch (one micro-batch: gradient accumulation 1) as ``a + b · tokens``.

    Attributes:
        a: Seconds a batch takes whatever it holds.
        b: Seconds per token in the batch (0 when the two timings cannot separate them).

    """

    a: float
    b: float

    def seconds(self, tokens: int) -> float:
        """Predicted seconds of a batch of ``tokens`` tokens."""
        return self.a + self.b * tokens


#: Two timed batches whose tokens differ by less than this fraction (of the shorter's) time
#: the same thing: a line through them would be their noise divided by a small difference.
SAME_TOKENS = 0.2


def fit_steps(points: list[tuple[int, float]]) -> StepFit | None:
    """The line through ``(tokens, seconds)`` timings; None without any.

    With one timing, or two at (nearly, `SAME_TOKENS`) the same tokens, or a faster longer
    batch (noise), every batch takes the slowest time: no guess below what was measured.
    Where the line would cross zero seconds above zero tokens, a batch's seconds are taken
    in proportion to its tokens through the longer batch's timing instead: a negative fixed
    part clipped to 0 would put every batch above the timing it was fitted on. (The orpo
    example once had its two batches 20 tokens apart, 1004 and 1024: a 0.7 s difference of
    noise made that a 35 s step where 6.6 s were measured.)
    """
    if not points:
        return None
    (t1, s1), (t2, s2) = min(points), max(points)
    if t2 <= t1 * (1 + SAME_TOKENS) or s2 <= s1:
        return StepFit(max(s for _, s in points), 0.0)
    b = (s2 - s1) / (t2 - t1)
    if s1 - b * t1 < 0:
        return StepFit(0.0, s2 / t2)
    return StepFit(s1 - b * t1, b)


def batch_tokens(costs: Costs, indices: list[int], padding_free: bool) -> int:
    """Tokens one batch of rows ``indices`` holds: padded to its longest, or their sum."""
    by_index = {r.index: r for r in costs.rows}
    picked = [by_index[i] for i in indices]
    if costs.packed and costs.cap:
        return len(picked) * costs.cap
    if padding_free:
        return sum(r.length * r.sequences for r in picked)
    longest = max((r.length for r in picked), default=0)
    return len(picked) * max((r.sequences for r in picked), default=1) * longest


def planned_batches(costs: Costs, trained: list[int], batch: int, accumulation: int,
                    steps: int, seed: int, padding_free: bool) -> list[int]:
    """Tokens of each batch training will run: ``steps × accumulation`` of them.

    Rows ``trained`` are shuffled afresh each epoch (seeded: the plan is reproducible) and cut
    into batches of ``batch``, the last one short, as the trainer's random sampler does; for
    packed text every batch is ``batch`` blocks.
    """
    want = steps * accumulation
    if not trained or batch < 1:
        return []
    if costs.packed and costs.cap:
        return [batch * costs.cap] * want
    rng = random.Random(seed)
    out: list[int] = []
    while len(out) < want:
        order = list(trained)
        rng.shuffle(order)
        for start in range(0, len(order), batch):
            out.append(batch_tokens(costs, order[start:start + batch], padding_free))
            if len(out) == want:
                break
    return out


def typical_windows(order: list[int], batch: int, tries: int,
                    tokens: Callable[[list[int]], int] | None = None) -> list[list[int]]:
    """Batches near the median row of ``order`` (longest first), the median one first.

    Then alternately shorter and longer neighbours, so a method that refuses the median batch
    (a row it leaves out) is timed on the next closest. With ``tokens`` (a batch's tokens),
    only batches that hold `SAME_TOKENS` fewer than the longest batch (``order``'s first):
    one that holds as many adds no point to the line, only a probe's cost (most of orpo's
    pairs are cut to max_length, so its median batch is as long as its longest).
    """
    if not order:
        return []
    middle = max(len(order) // 2 - batch // 2, 0)
    starts = [middle]
    for k in range(1, tries):
        for s in (middle + k * batch, middle - k * batch):
            if 0 <= s < len(order) and s not in starts:
                starts.append(s)
    out = [order[s:s + batch] for s in starts[:tries]]
    if tokens is not None:
        longest = tokens(order[:batch])
        out = [w for w in out if tokens(w) * (1 + SAME_TOKENS) < longest]
    return out
