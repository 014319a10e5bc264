"""The metric names an ``lm_eval`` evaluation will report, known before it runs where possible.

``ftp validate`` checks each ``[[evaluate]] require`` metric against them, so a misspelt task or
metric fails before training rather than after. lm_eval itself is not imported (validation
stays light): the task YAML files in the bundled folder and in ``task_dirs`` are read as plain
YAML. What they cannot say is declared with a ``*`` wildcard, which accepts any name there:

- a task defined by a YAML file in those folders: ``TASK/METRIC`` for each metric of its
  ``metric_list`` (else lm_eval's defaults for its ``output_type``), ``TASK/METRIC/FILTER``
  for each named filter of its ``filter_list``, and each ``METRIC_stderr`` with ``stderr``;
- any other name (lm_eval's own tasks, groups and tags, whose subtasks name their results):
  ``*`` — anything — or, with the ``metrics`` option, ``*/METRIC`` for each metric kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: lm_eval's metrics for a task without ``metric_list``, by ``output_type``.
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "loglikelihood": ("perplexity", "acc"),
    "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
    "multiple_choice": ("acc", "acc_norm"),
    "generate_until": ("exact_match",),
}
#: A filter's name where the task names none: lm_eval's default, left out of the name.
NO_FILTER = "none"
#: Include chains longer than this are not followed (a loop, or a file written by a machine).
MOST_INCLUDES = 16


def declared_metrics(tasks: list[str], folders: list[Path], keep: list[str] | None,
                     stderr: bool) -> tuple[str, ...]:
    """The names (``*`` patterns included) the evaluation of ``tasks`` reports.

    Args:
        tasks: The task, group or tag names asked for.
        folders: The task folders, searched in order (a later definition wins, as in lm_eval).
        keep: The ``metrics`` option: only these are reported; None: every computed one.
        stderr: Whether each metric's ``_stderr`` is reported too.

    """
    found = _local_tasks(folders)
    names: list[str] = []
    for task in tasks:
        cfg = found.get(task)
        if cfg is None:  # lm_eval's own task, a group or a tag: its result names are unknown
            names += [f"*/{m}" for m in _with_stderr(keep, stderr)] if keep else ["*"]
            names += [f"*/{m}/*" for m in _with_stderr(keep, stderr)] if keep else []
            continue
        metrics = _metrics(cfg)
        if metrics is None:
            names.append(f"{task}/*")
            continue
        if keep:
            metrics = [m for m in metrics if m in keep]
        for metric in _with_stderr(metrics, stderr):
            for filt in _filters(cfg):
                names.append(f"{task}/{metric}" if filt == NO_FILTER
                             else f"{task}/{metric}/{filt}")
    return tuple(dict.fromkeys(names))


def _with_stderr(metrics: list[str], stderr: bool) -> list[str]:
    return [n for m in metrics for n in ([m, f"{m}_stderr"] if stderr else [m])]


def _metrics(cfg: dict[str, Any]) -> list[str] | None:
    """The task's metric names, or None when the YAML does not say them plainly."""
    listed = cfg.get("metric_list")
    if listed is None:
        default = DEFAULT_METRICS.get(str(cfg.get("output_type", "generate_until")))
        return list(default) if default else None
    if not isinstance(listed, list):
        return None
    names = [m.get("metric") for m in listed if isinstance(m, dict)]
    if not names or not all(isinstance(n, str) and not n.startswith("!") for n in names):
        return None  # a metric given as a !function: its name is decided by lm_eval
    return [str(n) for n in names]


def _filters(cfg: dict[str, Any]) -> list[str]:
    listed = cfg.get("filter_list")
    if not isinstance(listed, list) or not listed:
        return [NO_FILTER]
    return [str(f.get("name", NO_FILTER)) for f in listed if isinstance(f, dict)] or [NO_FILTER]


def _local_tasks(folders: list[Path]) -> dict[str, dict[str, Any]]:
    """Each plain task (``task: NAME``) defined in the folders, with its includes merged."""
    found: dict[str, dict[str, Any]] = {}
    for folder in folders:
        if not folder.is_dir():
            continue  # reported when the evaluation runs (check_task_dirs)
        for path in sorted(folder.rglob("*.yaml")):
            cfg = _load(path)
            if cfg is not None and isinstance(cfg.get("task"), str):
                found[cfg["task"]] = cfg
    return found


def _load(path: Path, depth: int = 0) -> dict[str, Any] | None:
    """A task YAML file as a mapping, ``include`` merged under it; None if unreadable."""
    import yaml

    class Loader(yaml.SafeLoader):
        """Reads lm_eval's ``!function`` tags as opaque values."""

    Loader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix}")
    try:
        cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(cfg, dict):
        return None
    include = cfg.get("include")
    if isinstance(include, str) and depth < MOST_INCLUDES:
        base = _load(path.parent / include, depth + 1)
        if base is not None:
            cfg = {**base, **{k: v for k, v in cfg.items() if k != "include"}}
    return cfg
