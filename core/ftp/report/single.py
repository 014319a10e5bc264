"""report.html of one run: what happened, its curves, its evaluations, its data, its setup."""

from __future__ import annotations

from typing import Any

from ftp.report.html import change, esc, is_number, number, page, table
from ftp.report.runfiles import RunFiles
from ftp.report.svg import Series, line_chart

#: Charts drawn per stage: title and the logged keys each holds (the first solid, the rest dashed).
CHARTS = (
    ("loss", ("loss", "eval_loss")),
    ("learning rate", ("learning_rate",)),
    ("grad norm", ("grad_norm",)),
    ("tokens/s", ("tokens_per_second",)),
)
MOST_REWARD_SERIES = 8
#: Keys that are 0 throughout where a trainer does not count tokens (TRL's ORPO): not drawn.
COUNTED = frozenset({"tokens_per_second"})


def render_report(run: RunFiles) -> str:
    """The whole report page of ``run``."""
    body = [header(run), requirements_section(run), training_section(run),
            evaluations_section(run), answers_section(run), data_section(run),
            timings_section(run), versions_section(run), pipeline_section(run)]
    return page(f"{run.name}: ftp run report", [part for part in body if part])


def header(run: RunFiles) -> str:
    """Name, state, folder, wall time and, for a failed run, where and why."""
    status = run.status
    state = run.state
    lines = [f"<h1>{esc(run.name)} <span class=\"status-{esc(state)}\">{esc(state)}</span></h1>",
             f"<p>run folder <code>{esc(run.path.resolve())}</code>"]
    if is_number(status.get("seconds")):
        lines.append(f" · wall time {esc(number(status['seconds']))} s")
    if status.get("updated"):
        lines.append(f" · last updated {esc(status['updated'])}")
    lines.append("</p>")
    gates = [g for g in run.results.get("requirements") or [] if isinstance(g, dict)]
    failed = [g for g in gates if not g.get("passed")]
    if failed:  # finished, yet not good enough: said before anything else
        lines.append(f"<p class=\"fail\">{len(failed)} of {len(gates)} requirements failed "
                     "(ftp run exited with code 3)</p>")
    if status.get("error"):
        where = f" at step <b>{esc(status['failed_step'])}</b>" if status.get("failed_step") \
            else ""
        lines.append(f"<p class=\"fail\">failed{where}: {esc(status['error'])}</p>")
    if status.get("resume") and state != "finished":
        lines.append(f"<p>continue with <code>{esc(status['resume'])}</code></p>")
    return "".join(lines)


def requirements_section(run: RunFiles) -> str:
    """The quality gates (``[[evaluate]] require``) and whether each held."""
    gates = run.results.get("requirements")
    if not isinstance(gates, list) or not gates:
        return ""
    held = sum(bool(g.get("passed")) for g in gates if isinstance(g, dict))
    rows = []
    for g in gates:
        if not isinstance(g, dict):
            continue
        verdict = ('<td class="pass">holds</td>' if g.get("passed")
                   else '<td class="fail">FAILED</td>')
        rows.append([verdict, f"<td>{esc(g.get('evaluation', ''))}</td>",
                     f"<td><code>{esc(g.get('requirement', ''))}</code></td>",
                     f"<td class=\"num\">{esc(number(g.get('value')))}</td>",
                     f"<td class=\"num\">{esc(number(g.get('threshold')))}</td>",
                     f"<td>{esc(g.get('stage', ''))}</td>", f"<td>{esc(g.get('note', ''))}</td>"])
    return (f"<h2>Requirements: {held} of {len(rows)} hold</h2>"
            + table(["", "evaluation", "requirement", "value", "threshold", "after", "note"],
                    rows, raw=True))


def stage_charts(run: RunFiles, stage: str) -> list[str]:
    """The SVG charts of one stage: loss, learning rate, grad norm, tokens/s, rewards."""
    charts = []
    for title, keys in CHARTS:
        series = [Series(key, run.curve(stage, key), dashed=i > 0) for i, key in enumerate(keys)
                  if key not in COUNTED or run.counts_tokens(stage)]
        charts.append(line_chart(f"{stage}: {title}", series))
    rewards = [k for k in run.curve_keys(stage)
               if ("reward" in k or "margin" in k) and not k.endswith("std")]
    if rewards:
        series = [Series(k, run.curve(stage, k)) for k in rewards[:MOST_REWARD_SERIES]]
        charts.append(line_chart(f"{stage}: rewards", series))
    return [c for c in charts if c]


def training_section(run: RunFiles) -> str:
    """Per stage: a table of its last values, and its curves."""
    stages = run.stages()
    if not stages:
        return ""
    parts = ["<h2>Training</h2>"]
    rows = []
    for stage in stages:
        summary = run.closing(stage)
        seen = next((r["tokens_seen"] for r in reversed(run.metrics)
                     if r.get("stage") == stage and is_number(r.get("tokens_seen"))), None)
        counted = run.counts_tokens(stage)  # else 0 tokens would read as a measurement
        rows.append([stage, run.steps(stage), run.final_value(stage, "loss"),
                     summary.get("train_loss"), run.final_value(stage, "eval_loss"),
                     seen if counted else None,
                     run.final_value(stage, "tokens_per_second") if counted else None,
                     summary.get("train_runtime")])
    parts.append(table(["stage", "steps", "last loss", "mean loss", "last eval loss",
                        "tokens seen", "tokens/s", "seconds"], rows))
    for stage in stages:
        charts = stage_charts(run, stage)
        if charts:
            parts.append(f"<h3>{esc(stage)}</h3><div class=\"charts\">{''.join(charts)}</div>")
    return "".join(parts)


def evaluation_names(run: RunFiles) -> list[str]:
    """Every evaluation's name, in the order results.json first holds it."""
    names: list[str] = []
    for by_eval in run.evaluations().values():
        names += [n for n in by_eval if n not in names]
    return names


def evaluations_section(run: RunFiles) -> str:
    """Each evaluation's metrics at every stage it ran, and the change from first to last."""
    evals = run.evaluations()
    names = evaluation_names(run)
    if not names:
        return ""
    parts = ["<h2>Evaluations</h2>"]
    for name in names:
        when = [s for s in evals if name in evals[s]]
        metrics = {s: evals[s][name].get("metrics") or {} for s in when}
        keys: list[str] = []
        for m in metrics.values():
            keys += [k for k, v in m.items() if k not in keys and (is_number(v) or v is None)]
        if not keys:
            continue
        heads = ["metric"] + [("before training" if s == "base" else f"after {s}") for s in when]
        rows = []
        for key in keys:
            cells = [f"<td>{esc(key)}</td>"]
            cells += [f'<td class="num">{esc(number(metrics[s].get(key)))}</td>' for s in when]
            if len(when) > 1:
                cells.append(change(metrics[when[0]].get(key), metrics[when[-1]].get(key)))
            rows.append(cells)
        if len(when) > 1:
            heads.append("change")
        parts.append(f"<h3>{esc(name)}</h3>" + table(heads, rows, raw=True))
        parts += [confusion_table(evals[s][name], s) for s in when
                  if isinstance(evals[s][name].get("confusion_matrix"), dict)]
        parts += [misclassified_table(evals[s][name], s) for s in when]
    return "".join(parts)


def misclassified_table(result: dict[str, Any], stage: str) -> str:
    """A classifier's wrong answers kept as samples: text, true label, predicted label."""
    wrong = [x for x in result.get("samples") or [] if isinstance(x, dict)
             and {"text", "label", "predicted"} <= set(x)]
    if not wrong:
        return ""
    when = "before training" if stage == "base" else f"after {stage}"
    return (f"<p>misclassified {esc(when)} (first {len(wrong)})</p>"
            + table(["text", "label", "predicted"],
                    [[x["text"], x["label"], x["predicted"]] for x in wrong]))


def confusion_table(result: dict[str, Any], stage: str) -> str:
    """A classifier's confusion matrix (rows: the true label, columns: the predicted one)."""
    confusion = result["confusion_matrix"]
    labels, matrix = confusion.get("labels"), confusion.get("matrix")
    if not isinstance(labels, list) or not isinstance(matrix, list) \
            or len(matrix) != len(labels):
        return ""
    when = "before training" if stage == "base" else f"after {stage}"
    rows = [[f"<td><b>{esc(label)}</b></td>"]
            + [f'<td class="num">{esc(number(n))}</td>' for n in counts]
            for label, counts in zip(labels, matrix, strict=True) if isinstance(counts, list)]
    return (f"<p>confusion matrix {esc(when)} (rows: true label, columns: predicted)</p>"
            + table(["", *[str(label) for label in labels]], rows, raw=True))


def _answer_of(sample: dict[str, Any]) -> str | None:
    for key in ("answer", "completion"):
        if isinstance(sample.get(key), str):
            return str(sample[key])
    return None


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):  # messages
        return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in prompt
                         if isinstance(m, dict))
    return str(prompt)


def answers_section(run: RunFiles) -> str:
    """Generated answers to the same prompts, one column per stage."""
    evals = run.evaluations()
    parts = []
    for name in evaluation_names(run):
        when = [s for s in evals if name in evals[s]]
        by_stage: dict[str, dict[str, dict[str, Any]]] = {}
        prompts: list[str] = []
        for s in when:
            for sample in evals[s][name].get("samples") or []:
                if not isinstance(sample, dict) or "prompt" not in sample \
                        or _answer_of(sample) is None:
                    continue
                prompt = _prompt_text(sample["prompt"])
                by_stage.setdefault(s, {}).setdefault(prompt, sample)
                if prompt not in prompts:
                    prompts.append(prompt)
        if not prompts:
            continue
        shown = [s for s in when if s in by_stage]
        rows = []
        for prompt in prompts:
            cells = [f"<td class=\"answer\">{esc(prompt)}</td>"]
            for s in shown:
                sample = by_stage[s].get(prompt)
                if sample is None:
                    cells.append("<td></td>")
                    continue
                notes = []
                if "stopped" in sample:
                    notes.append("stopped" if sample["stopped"] else "cut off")
                if "expected" in sample:
                    notes.append("expected ✓" if sample["expected"] else "expected ✗")
                note = f"<br><span class=\"muted\">{esc(', '.join(notes))}</span>" if notes \
                    else ""
                answer = _answer_of(sample) or ""
                # An empty answer (EOS first) is shown as such, not as a cell left blank.
                shown_answer = esc(answer) if answer.strip() else \
                    '<span class="muted">(empty answer)</span>'
                cells.append(f"<td class=\"answer\">{shown_answer}{note}</td>")
            rows.append(cells)
        heads = ["prompt"] + [("before training" if s == "base" else f"after {s}")
                              for s in shown]
        parts.append(f"<h3>{esc(name)}</h3>" + table(heads, rows, raw=True))
    return "<h2>Answers</h2>" + "".join(parts) if parts else ""


def data_section(run: RunFiles) -> str:
    """Rows per dataset, and what each stage's method made of them (tokens, truncation)."""
    parts = []
    if run.data:
        rows = []
        for name, fp in run.data.items():
            if not isinstance(fp, dict):
                continue
            skipped = fp.get("skipped") or {}
            rows.append([name, fp.get("format") or "+".join(fp.get("datasets") or []),
                         fp.get("rows"), fp.get("train_rows"), fp.get("eval_rows"),
                         sum(v for v in skipped.values() if is_number(v))
                         if isinstance(skipped, dict) else None,
                         fp.get("source", "")])
        parts.append(table(["data", "format", "rows read", "train rows", "held-out rows",
                            "skipped rows", "source"], rows))
    tokenized = {s: run.tokenized(s) for s in run.stages()}
    keys: list[str] = []
    for counts in tokenized.values():
        keys += [k for k, v in counts.items() if k not in keys and is_number(v)]
    if keys:
        parts.append(table(["stage", *keys],
                           [[s, *[c.get(k) for k in keys]] for s, c in tokenized.items() if c]))
    return "<h2>Data</h2>" + "".join(parts) if parts else ""


def timings_section(run: RunFiles) -> str:
    """Each step of the run and its seconds."""
    timings = run.status.get("timings")
    if not isinstance(timings, dict) or not timings:
        return ""
    rows = [[step, seconds] for step, seconds in timings.items()]
    if is_number(run.status.get("seconds")):
        rows.append(["whole run", run.status["seconds"]])
    return "<h2>Timings</h2>" + table(["step", "seconds"], rows)


def versions_section(run: RunFiles) -> str:
    """Python, platform, packages and plugins, from environment.json."""
    env = run.environment
    if not env:
        return ""
    rows = [["python", env.get("python")], ["platform", env.get("platform")]]
    packages = env.get("packages")
    if isinstance(packages, dict):
        rows += [[name, v or "not installed"] for name, v in packages.items()]
    for info in env.get("plugins") or []:
        if isinstance(info, dict):
            rows.append([f"plugin {info.get('name')}",
                         " ".join(str(info.get(k)) for k in ("distribution", "version")
                                  if info.get(k))])
    return "<h2>Versions</h2>" + table(["", "version"], rows)


def pipeline_section(run: RunFiles) -> str:
    """The pipeline file as run, with the ``--set`` overrides."""
    if not run.pipeline_text:
        return ""
    overrides = run.status.get("overrides") or []
    given = (f"<p>with <code>{esc(' '.join('--set ' + str(o) for o in overrides))}</code></p>"
             if overrides else "")
    return f"<h2>Pipeline</h2>{given}<pre>{esc(run.pipeline_text)}</pre>"
