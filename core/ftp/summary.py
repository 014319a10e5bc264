"""summary.md: what a person wants to know about a run, in a page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftp.config import Pipeline

AUTO_CLASSES = {
    "causal-lm": "AutoModelForCausalLM",
    "sequence-classification": "AutoModelForSequenceClassification",
}


def render_summary(
    pipeline: Pipeline,
    status: str,
    seconds: float,
    timings: dict[str, float],
    train: dict[str, dict[str, Any]],
    results: dict[str, Any],
    error: str,
    run_dir: Path,
) -> str:
    """Render the run's summary as Markdown."""
    lines = [f"# {pipeline.name}: {status}", ""]
    lines.append(f"- pipeline file: `{pipeline.source}`")
    lines.append(f"- wall time: {seconds:.1f} s")
    if error:
        lines.append(f"- error: {error}")
        lines.append("- earlier outputs in this folder are kept; fix the problem and rerun "
                     "with `--overwrite` or another `--output-dir`")
    if status == "finished":
        task = pipeline.stages[-1].method.cls.task
        auto = AUTO_CLASSES.get(task, "the transformers Auto class for " + task)
        lines.append(f"- final model: `{run_dir / 'model'}` (loads with "
                     f"`{auto}.from_pretrained`)")
    gates = results.get("requirements") or []
    if gates:
        from ftp.gates import describe

        held = sum(bool(g.get("passed")) for g in gates)
        lines += ["", f"## Requirements: {held} of {len(gates)} hold", ""]
        lines += [f"- {'holds' if g.get('passed') else 'FAILED'}: {describe(g)}" for g in gates]
    lines += ["", "## Steps", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {label} | {sec} |" for label, sec in timings.items()]
    if train:
        lines += ["", "## Training", "",
                  "| stage | steps | last logged loss | mean loss | tokens/s | tokens | seconds |",
                  "|---|---|---|---|---|---|---|"]
        for stage, info in train.items():
            cells = [_num(info.get(k)) for k in ("steps", "loss", "train_loss",
                                                 "tokens_per_second",
                                                 "tokens_seen", "seconds")]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    for stage, evals in results.get("stages", {}).items():
        lines += ["", f"## Evaluation: {stage}", ""]
        for name, result in evals.items():
            metrics = result.get("metrics") or {}
            shown = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                              for k, v in metrics.items() if isinstance(v, int | float))
            lines.append(f"- **{name}**{': ' + shown if shown else ''}")
            for sample in result.get("samples") or []:
                if "prompt" in sample:
                    answer = str(sample.get("answer", "")).replace("\n", " ")
                    lines.append(f"  - Q: {sample['prompt']} — A: {answer}")
    return "\n".join(lines) + "\n"


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
