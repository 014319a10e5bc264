"""Turning ftp's nested config and results into MLflow's flat param and metric names.

MLflow keys may hold letters, digits, ``_ - . / :`` and spaces; params are strings of at
most 6000 characters. Config keys join with ``.`` (``stages.sft.learning_rate``), metric keys
with ``/`` (``sft/loss/perplexity``), the way MLflow's UI groups them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

MAX_PARAM_VALUE = 6000
MAX_KEY = 250
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_\-./: ]")


def clean_key(key: str) -> str:
    """Replace characters MLflow refuses in a key with ``_`` and cut it to MLflow's limit."""
    return _NOT_ALLOWED.sub("_", key)[:MAX_KEY]


def config_params(resolved: Mapping[str, Any], seed: int, stage_names: Sequence[str],
                  evaluation_names: Sequence[str]) -> dict[str, str]:
    """Params from ``resolved.json``: every option of every section, flattened.

    Stages and evaluations are keyed by their names rather than their positions, so the same
    option has the same param name in runs that add or reorder stages. ``raw`` (the file as
    written) repeats the sections; only its ``[pipeline]`` table is taken from it.

    Args:
        resolved: The contents of the run directory's ``resolved.json``.
        seed: The pipeline's seed (``raw`` holds it only when the file sets it).
        stage_names: The stages' names, in file order.
        evaluation_names: The evaluations' names, in file order (``resolved.json`` records
            only the names the file sets).

    Returns:
        Param names mapped to values (strings as they are, anything else as JSON).

    """
    pipeline = (resolved.get("raw") or {}).get("pipeline")
    tree: dict[str, Any] = {"pipeline": {**(pipeline if isinstance(pipeline, Mapping) else {}),
                                         "seed": seed}}
    for section in ("model", "data"):
        if section in resolved:
            tree[section] = resolved[section]
    for section, names in (("stages", stage_names), ("evaluate", evaluation_names)):
        entries = resolved.get(section) or []
        tree[section] = {(names[i] if i < len(names) else str(i)):
                         {k: v for k, v in e.items() if k != "name"}
                         for i, e in enumerate(entries)}
    return {clean_key(k): _param_value(v) for k, v in _flatten(tree, ".")}


def numeric_metrics(metrics: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """The numbers among ``metrics`` (nested dicts flattened with ``/``), keyed under ``prefix``.

    Strings, lists and None are left out: MLflow metrics are numbers. Booleans count as 0/1;
    NaN and infinities are kept (MLflow stores them).
    """
    out = {}
    for key, value in _flatten(metrics, "/"):
        if isinstance(value, int | float):
            out[clean_key(f"{prefix}/{key}")] = float(value)
    return out


def _flatten(obj: Any, sep: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, Mapping) and obj:
        for key, value in obj.items():
            yield from _flatten(value, sep, f"{prefix}{sep}{key}" if prefix else str(key))
    elif prefix:
        yield prefix, obj


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                            default=str)
    if len(text) > MAX_PARAM_VALUE:
        text = text[:MAX_PARAM_VALUE - 1] + "…"
    return text
