"""One page comparing runs: the settings that differ, metrics side by side, curves overlaid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ftp.report.html import esc, is_number, number, page, table
from ftp.report.runfiles import RunFiles
from ftp.report.single import evaluation_names
from ftp.report.svg import Series, line_chart

MISSING = "(not set)"
#: Per stage, side by side: what each run's training came to.
TRAINING: tuple[tuple[str, Callable[[RunFiles, str], Any]], ...] = (
    ("steps", lambda r, s: r.steps(s)),
    ("last loss", lambda r, s: r.final_value(s, "loss")),
    ("mean loss", lambda r, s: r.closing(s).get("train_loss")),
    ("last eval loss", lambda r, s: r.final_value(s, "eval_loss")),
    ("seconds", lambda r, s: r.closing(s).get("train_runtime")),
)
OVERLAID = (("loss", "loss"), ("eval loss", "eval_loss"), ("learning rate", "learning_rate"),
            ("tokens/s", "tokens_per_second"))


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """TOML data as ``path → leaf``: ``{"stages": [{"lr": 1}]}`` → ``{"stages[0].lr": 1}``."""
    flat: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        for i, item in enumerate(value):
            flat.update(flatten(item, f"{prefix}[{i}]"))
    else:
        flat[prefix] = value
    return flat


def differences(runs: list[RunFiles]) -> list[tuple[str, list[Any]]]:
    """Each pipeline setting whose value is not the same in every run, with each run's."""
    flats = [flatten(r.pipeline_raw()) for r in runs]
    keys: list[str] = []
    for flat in flats:
        keys += [k for k in flat if k not in keys]
    found = []
    for key in keys:
        values = [flat.get(key, MISSING) for flat in flats]
        if any(v != values[0] for v in values[1:]):
            found.append((key, values))
    return found


def labels(runs: list[RunFiles]) -> list[str]:
    """A distinct short label per run: the folder names (parents added where they clash)."""
    names = [r.path.name for r in runs]
    if len(set(names)) < len(names):
        names = [f"{r.path.parent.name}/{r.path.name}" for r in runs]
    if len(set(names)) < len(names):
        names = [f"{i + 1}: {n}" for i, n in enumerate(names)]
    return names


def _final_metrics(run: RunFiles, name: str) -> tuple[str, dict[str, Any]]:
    """The latest stage an evaluation ran at, and its metrics there."""
    evals = run.evaluations()
    when = [s for s in evals if name in evals[s]]
    if not when:
        return "", {}
    metrics = evals[when[-1]][name].get("metrics") or {}
    return when[-1], metrics if isinstance(metrics, dict) else {}


def render_comparison(runs: list[RunFiles]) -> str:
    """The comparison page of ``runs`` (two or more)."""
    names = labels(runs)
    body = [f"<h1>Comparing {len(runs)} runs</h1>",
            table(["run", "pipeline", "status", "seconds", "folder"],
                  [[n, r.name, r.state, r.status.get("seconds"), str(r.path.resolve())]
                   for n, r in zip(names, runs, strict=True)])]

    diffs = differences(runs)
    body.append("<h2>Settings that differ</h2>")
    if diffs:
        rows = [[f"<td><code>{esc(key)}</code></td>"]
                + [f"<td>{esc(_toml_value(v))}</td>" for v in values]
                for key, values in diffs]
        body.append(table(["setting", *names], rows, raw=True))
    else:
        body.append("<p>The pipelines are the same.</p>")

    stages: list[str] = []
    for run in runs:
        stages += [s for s in run.stages() if s not in stages]
    training_rows = []
    for stage in stages:
        for label, value in TRAINING:
            cells = [value(r, stage) for r in runs]
            if any(c is not None for c in cells):
                training_rows.append([f"<td>{esc(stage)}</td><td>{esc(label)}</td>"]
                                     + [f'<td class="num">{esc(number(c))}</td>'
                                        for c in cells])
    if training_rows:
        body.append("<h2>Training</h2>")
        body.append(table(["stage", "", *names], [["".join(r)] for r in training_rows],
                          raw=True))

    metric_rows = []
    evaluations: list[str] = []
    for run in runs:
        evaluations += [n for n in evaluation_names(run) if n not in evaluations]
    for name in evaluations:
        finals = [_final_metrics(r, name) for r in runs]
        keys: list[str] = []
        for _, m in finals:
            keys += [k for k, v in m.items() if k not in keys and is_number(v)]
        for key in keys:
            metric_rows.append([f"<td>{esc(name)}</td><td>{esc(key)}</td>"]
                               + [f'<td class="num">{esc(number(m.get(key)))}</td>'
                                  for _, m in finals])
    gate_rows = []
    for i, run in enumerate(runs):
        for g in run.results.get("requirements") or []:
            if isinstance(g, dict):
                verdict = ('<td class="pass">holds</td>' if g.get("passed")
                           else '<td class="fail">FAILED</td>')
                gate_rows.append([f"<td>{esc(names[i])}</td>", verdict,
                                  f"<td><code>{esc(g.get('requirement', ''))}</code></td>",
                                  f'<td class="num">{esc(number(g.get("value")))}</td>'])
    if metric_rows:
        body.append("<h2>Metrics after the last stage each evaluation ran at</h2>")
        body.append(table(["evaluation", "metric", *names],
                          [["".join(r)] for r in metric_rows], raw=True))
    if gate_rows:
        body.append("<h2>Requirements</h2>")
        body.append(table(["run", "", "requirement", "value"], gate_rows, raw=True))

    charts = []
    for stage in stages:
        for title, key in OVERLAID:
            series = [Series(n, r.curve(stage, key)) for n, r in zip(names, runs, strict=True)]
            charts.append(line_chart(f"{stage}: {title}", series))
    drawn = [c for c in charts if c]
    if drawn:
        body.append("<h2>Curves</h2><div class=\"charts\">" + "".join(drawn) + "</div>")
    return page("ftp: comparing " + ", ".join(names), body)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value != MISSING:
        return repr(value)
    return str(value)
