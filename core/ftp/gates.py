"""Quality gates: ``[[evaluate]] require = ["accuracy >= base + 0.02", ...]``.

A requirement names one of the evaluation's metrics, a comparison, and a threshold: a number,
or ``base`` (the same metric before training; the evaluation needs ``before = true``) with an
optional ``+ N`` / ``- N``. The syntax, ``before`` and the metric names (those the evaluator
declares) are checked when the pipeline is validated; the requirements are judged after the
run on the last stage the evaluation ran after, recorded in results.json (``requirements``),
and ``ftp run`` exits with `EXIT_CODE` when any fails, after everything is saved.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: ``ftp run``'s exit code when the run finished and a requirement failed.
EXIT_CODE = 3
BASE = "base"

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq,
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_SYNTAX = re.compile(
    rf"^\s*(?P<metric>[A-Za-z_][\w./-]*)\s*(?P<op>>=|<=|==|>|<)\s*"
    rf"(?:(?P<base>{BASE})\s*(?:(?P<sign>[+-])\s*(?P<offset>{_NUMBER}))?"
    rf"|(?P<value>[+-]?{_NUMBER}))\s*$"
)
SYNTAX_HELP = ("write METRIC OP THRESHOLD, OP one of >= > <= < ==, THRESHOLD a number or "
               "base, base + N, base - N: e.g. \"accuracy >= base + 0.02\"")


@dataclass(frozen=True)
class Requirement:
    """One parsed requirement.

    Attributes:
        text: As written.
        metric: The metric it judges.
        op: The comparison (``>=`` ...).
        value: The absolute threshold, or None when it is relative to ``base``.
        offset: Added to the base value (relative requirements).

    """

    text: str
    metric: str
    op: str
    value: float | None
    offset: float = 0.0

    @property
    def relative(self) -> bool:
        """Whether the threshold is the metric's value before training (plus an offset)."""
        return self.value is None

    def threshold(self, base: float | None) -> float | None:
        """The number the metric is compared with (None: relative, and no base value)."""
        if self.value is not None:
            return self.value
        return None if base is None else base + self.offset

    def holds(self, value: float, base: float | None) -> bool:
        """Whether ``value`` meets the requirement; a NaN or missing threshold never does."""
        limit = self.threshold(base)
        if limit is None or not (math.isfinite(value) and math.isfinite(limit)):
            return False
        return _OPS[self.op](value, limit)


def parse(text: str) -> Requirement:
    """Parse one requirement.

    Raises:
        ValueError: saying what is wrong and how to write it.

    """
    found = _SYNTAX.match(text) if isinstance(text, str) else None
    if found is None:
        raise ValueError(f"cannot read requirement {text!r}: {SYNTAX_HELP}")
    if found["base"]:
        offset = float(found["offset"] or 0.0)
        return Requirement(text, found["metric"], found["op"], None,
                           -offset if found["sign"] == "-" else offset)
    return Requirement(text, found["metric"], found["op"], float(found["value"]))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def judge(evaluation: str, requires: list[str], by_stage: dict[str, dict[str, Any]]
          ) -> list[dict[str, Any]]:
    """Judge one evaluation's requirements against its results.

    Args:
        evaluation: The evaluation's name.
        requires: Its ``require`` strings (already validated).
        by_stage: results.json's ``stages`` (stage → evaluation → result), in run order.

    Returns:
        One record per requirement: evaluation, requirement, metric, stage (where judged),
        value, base, threshold, passed and, when it could not be judged, a note.

    """
    ran = [s for s, evals in by_stage.items() if evaluation in evals]
    after = [s for s in ran if s != BASE]
    stage = after[-1] if after else (ran[-1] if ran else None)

    def metric(at: str | None, name: str) -> float | None:
        if at is None:
            return None
        return _number((by_stage[at][evaluation].get("metrics") or {}).get(name))

    records = []
    for text in requires:
        req = parse(text)
        value = metric(stage, req.metric)
        base = metric(BASE, req.metric) if BASE in ran else None
        note = ""
        if stage is None:
            note = "the evaluation did not run"
        elif value is None:
            note = f"{req.metric!r} was not reported after {stage!r}"
        elif req.relative and base is None:
            note = f"{req.metric!r} was not reported before training"
        passed = not note and value is not None and req.holds(value, base)
        records.append({"evaluation": evaluation, "requirement": text, "metric": req.metric,
                        "stage": stage, "value": value, "base": base,
                        "threshold": req.threshold(base), "passed": passed,
                        **({"note": note} if note else {})})
    return records


def describe(record: dict[str, Any]) -> str:
    """One line for a judged requirement: ``evaluation: requirement — value vs threshold``."""
    if record.get("note"):
        why = record["note"]
    else:
        why = f"{record['metric']} = {record['value']:.4g}, threshold {record['threshold']:.4g}"
    return f"{record['evaluation']}: {record['requirement']} ({why})"
