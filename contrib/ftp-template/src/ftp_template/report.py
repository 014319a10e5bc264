"""``metrics.csv``: every evaluation metric of a run, one row each, for spreadsheets."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


def write_metrics_csv(path: Path, results: dict[str, Any]) -> int:
    """Write ``stage, evaluation, metric, value`` rows from results.json's contents.

    Only numbers are written; samples and nested values stay in results.json. Returns the
    number of rows.
    """
    rows = [
        (stage, evaluation, metric, value)
        for stage, evaluations in results.get("stages", {}).items()
        for evaluation, result in evaluations.items()
        for metric, value in (result.get("metrics") or {}).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["stage", "evaluation", "metric", "value"])
        writer.writerows(rows)
    return len(rows)
