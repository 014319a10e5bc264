"""``ftp models compare``: candidate base models side by side on the pipeline's own data.

Each candidate is the pipeline with ``model.path`` replaced, validated like any pipeline. For
the first stage, per candidate: size (`ftp.planning.sizing.Shape`, from the model built on the
meta device with the stage's adapter), what its card says (`ftp.planning.describe`), fit to
the data (tokens per word, rows truncated at max_length, template tokens per row), held-out
loss (the registered ``loss`` evaluator) and the pipeline's ``before = true`` evaluations,
the memory estimate and the measured probe, the stage's time, and with ``--pilot N`` the
held-out loss after N training steps. A candidate given as a config.json alone (no weights)
gets the size, memory and time estimates only; its time is its FLOPs at the FLOP rate another
candidate's probe achieved.

The recommendation: the smallest model whose held-out loss is within 5% of the best among
those that fit the memory budget; where there is no held-out loss (classifiers), the smallest
that fits, with ``--pilot`` suggested to compare them trained.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftp.errors import UserError
from ftp.planning.describe import UNKNOWN, card_facts
from ftp.planning.plan import minutes, peak_of
from ftp.planning.rows import tokens_per_word
from ftp.planning.sizing import GIB, gib
from ftp.planning.stages import (
    Invocation,
    StageCost,
    memory_of_device,
    meta_shape,
    prepare_data,
    stage_cost,
)

#: A candidate within this fraction of the best held-out loss counts as good as the best.
WITHIN = 0.05
WRITTEN_BY = "ftp models compare"
#: Without a held-out split, the loss is scored on this many training rows instead.
TRAINING_ROWS = 200


@dataclass
class Candidate:
    """One candidate's figures (None where unknown)."""

    name: str
    config_only: bool = False
    facts: dict[str, str] = field(default_factory=dict)
    cost: StageCost | None = None
    tokens_per_word: float | None = None
    heldout_loss: float | None = None
    heldout_tokens: int | None = None
    #: Which rows the loss is scored on: "held-out", or "training" without a held-out split.
    loss_rows: str = "held-out"
    before: dict[str, dict[str, Any]] = field(default_factory=dict)
    pilot_loss: float | None = None
    after_pilot: dict[str, dict[str, Any]] = field(default_factory=dict)
    fits: bool | None = None
    peak: int | None = None
    eta: float | None = None
    eta_how: str = ""

    @property
    def parameters(self) -> int:
        """Total parameters (0 when unknown)."""
        return self.cost.shape.parameters if self.cost else 0

    def accuracy(self) -> float | None:
        """The first ``accuracy`` the pipeline's evaluations gave after the pilot, or None."""
        return next((float(m["accuracy"]) for m in self.after_pilot.values()
                     if isinstance(m.get("accuracy"), int | float)), None)

    def loss(self) -> float | None:
        """The loss the recommendation compares: after the pilot when there was one."""
        return self.pilot_loss if self.pilot_loss is not None else self.heldout_loss

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        cost = self.cost.as_dict() if self.cost else None
        return {"name": self.name, "config_only": self.config_only, "facts": self.facts,
                "tokens_per_word": self.tokens_per_word,
                "truncated_rows": self.cost.costs.truncated if self.cost and self.cost.costs
                else None,
                "template_tokens_per_row": self.cost.costs.template_tokens
                if self.cost and self.cost.costs else None,
                "heldout_loss": self.heldout_loss, "heldout_tokens": self.heldout_tokens,
                "loss_rows": self.loss_rows,
                "before": self.before, "pilot_loss": self.pilot_loss,
                "after_pilot": self.after_pilot, "fits": self.fits,
                "peak_bytes": self.peak, "eta_seconds": self.eta, "eta_how": self.eta_how,
                "stage": cost}


@dataclass
class Report:
    """Every candidate, the budget, and the recommendation with its reasons."""

    pipeline: str
    stage: str
    budget: int
    pilot: int
    candidates: list[Candidate]
    choice: str | None = None
    reasons: list[str] = field(default_factory=list)

    def recommendation_line(self) -> str:
        """``recommended: NAME — reasons`` or why none is."""
        if self.choice is None:
            return "recommended: none — " + "; ".join(self.reasons)
        return f"recommended: {self.choice} — " + "; ".join(self.reasons)

    def rows(self) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
        """Two tables (size; fit and cost) as header and rows of text."""
        size_head = ["candidate", "parameters", "trained", "architecture", "layers", "hidden",
                     "context", "vocab", "kind", "template"]
        cost_head = ["candidate", "tok/word", "truncated", "tmpl/row", "held-out loss",
                     *(["after pilot"] if self.pilot else []), "before", "estimated",
                     "measured", "s/step", "stage time", "fits"]
        size_rows, cost_rows = [], []
        for c in self.candidates:
            s = c.cost.shape if c.cost else None
            size_rows.append([
                c.name + (" (config only)" if c.config_only else ""),
                f"{s.parameters:,}" if s else UNKNOWN, f"{s.trainable:,}" if s else UNKNOWN,
                s.architecture if s else UNKNOWN, str(s.layers) if s else UNKNOWN,
                str(s.hidden_size) if s else UNKNOWN,
                str(s.context_length or UNKNOWN) if s else UNKNOWN,
                str(s.vocabulary) if s else UNKNOWN, c.facts.get("kind", UNKNOWN),
                c.facts.get("chat_template", UNKNOWN)])
            costs = c.cost.costs if c.cost else None
            before = _metrics(c.before)
            cost_rows.append([
                c.name, _num(c.tokens_per_word, 2),
                f"{costs.truncated}/{len(costs.rows)}" if costs else UNKNOWN,
                _num(costs.template_tokens, 1) if costs else UNKNOWN,
                _num(c.heldout_loss, 4),
                *([_num(c.pilot_loss, 4) if c.pilot_loss is not None else
                   _metrics(c.after_pilot)] if self.pilot else []), before,
                gib(c.cost.estimate.total) if c.cost else UNKNOWN,
                gib(c.cost.measured) if c.cost else UNKNOWN,
                _num(c.cost.seconds_per_step, 2) if c.cost else UNKNOWN,
                minutes(c.eta) + (" (est.)" if c.eta is not None and c.eta_how != "probe"
                                  else ""),
                {True: "yes", False: "no", None: UNKNOWN}[c.fits]])
        return size_head, size_rows, cost_head, cost_rows

    def table_lines(self) -> list[str]:
        """The two tables for the terminal."""
        size_head, size_rows, cost_head, cost_rows = self.rows()
        note = (f"memory above the libraries' baseline; fits: against {gib(self.budget)}; "
                f"stage {self.stage!r}")
        return [*_table(size_head, size_rows), "", *_table(cost_head, cost_rows), note,
                *self.loss_note()]

    def loss_note(self) -> list[str]:
        """A line saying the loss was scored on training rows, when it was (else none)."""
        if not any(c.loss_rows == "training" and c.heldout_loss is not None
                   for c in self.candidates):
            return []  # held-out rows, or no loss at all (a classifier's data)
        line = (f"held-out loss: the pipeline has no held-out split, so it is the loss on the "
                f"first {TRAINING_ROWS} training rows (at most)")
        if self.pilot:
            line += "; after the pilot, on rows the pilot trained on"
        return [line]

    def as_dict(self) -> dict[str, Any]:
        """report.json's contents."""
        return {"written_by": WRITTEN_BY, "pipeline": self.pipeline, "stage": self.stage,
                "budget_bytes": self.budget, "pilot_steps": self.pilot,
                "recommended": self.choice, "reasons": self.reasons,
                "candidates": [c.as_dict() for c in self.candidates]}

    def markdown(self) -> str:
        """report.md's contents."""
        size_head, size_rows, cost_head, cost_rows = self.rows()
        out = [f"# Model candidates for {self.pipeline!r} (stage {self.stage!r})", "",
               f"**{self.recommendation_line()}**", "", "## Size and complexity", "",
               *_md(size_head, size_rows), "", "## Fit to the data, what it knows, cost", "",
               *_md(cost_head, cost_rows), "",
               *[f"{line[0].upper()}{line[1:]}.\n" for line in self.loss_note()],
               f"Memory: estimated and measured peaks are above the libraries' baseline; "
               f"*fits* compares the measured peak plus that baseline (the estimate for a "
               f"config-only candidate) with the budget, {gib(self.budget)}. Stage time: "
               "steps × the probe's seconds per step; for a config-only candidate its FLOPs "
               "at the FLOP rate another candidate's probe achieved.", "",
               "## What the cards say", "",
               *_md(["candidate", "languages", "datasets", "license", "base model", "kind",
                     "chat template"],
                    [[c.name, *(c.facts.get(k, UNKNOWN) for k in
                                ("languages", "datasets", "license", "base_model", "kind",
                                 "chat_template"))] for c in self.candidates]), ""]
        notes = [f"- {c.name}: {n}" for c in self.candidates if c.cost for n in c.cost.notes]
        notes += [f"- {c.name}: probe: {c.cost.probe.get('error')}" for c in self.candidates
                  if c.cost and c.cost.probe and not c.cost.probe.get("ok")]
        if notes:
            out += ["## Notes", "", *notes, ""]
        return "\n".join(out)


def _metrics(results: dict[str, dict[str, Any]]) -> str:
    """Evaluations' numeric metrics as ``name=value, ...`` (``—`` for none)."""
    return ", ".join(f"{k}={v:.4g}" for ev in results.values() for k, v in ev.items()
                     if isinstance(v, int | float)) or "—"


def _num(value: float | None, digits: int) -> str:
    return UNKNOWN if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [head, *rows]]


def _md(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(r) + " |" for r in rows)]


def candidate_path(name: str) -> str:
    """The model.path for a candidate: a config.json file stands for its folder."""
    path = Path(name).expanduser()
    if path.name == "config.json" and path.is_file():
        return str(path.parent)
    return name


def check_output(folder: Path) -> None:
    """Refuse to write over report files this command did not write."""
    for name in ("report.md", "candidates.png"):
        if (folder / name).exists() and not _ours(folder):
            raise UserError(f"{folder / name} exists and was not written by ftp models "
                            "compare; choose another --output-dir")
    if (folder / "report.json").exists() and not _ours(folder):
        raise UserError(f"{folder / 'report.json'} exists and was not written by ftp models "
                        "compare; choose another --output-dir")


def _ours(folder: Path) -> bool:
    try:
        data = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("written_by") == WRITTEN_BY


def compare_candidates(state: Any, pipeline_path: Path, overrides: tuple[str, ...],
                       names: list[str], budget_gb: float | None, pilot: int, folder: Path,
                       say: Callable[[str], None] = lambda line: None) -> Report:
    """Measure every candidate, recommend one, write the report files into ``folder``.

    Raises:
        UserError: for a candidate that does not validate, or an output folder holding
            files this command did not write.

    """
    check_output(folder)
    pipelines = []
    for name in names:  # every candidate validated before anything heavy runs
        sets = [*overrides, f"model.path={json.dumps(candidate_path(name))}"]
        try:
            pipelines.append((name, sets, state.pipeline(pipeline_path, tuple(sets))))
        except UserError as exc:
            # One line naming the candidate: a config error's problems joined after it.
            lines = str(exc).splitlines()
            detail = "; ".join(line.strip().removeprefix("- ") for line in lines[1:])
            raise UserError(f"candidate {name!r}: {detail or lines[0]}") from None
    first = pipelines[0][2]
    say("preparing data")
    data = prepare_data(first)
    stage = first.stages[0]
    report = Report(first.name, stage.name, 0, pilot, [])
    for name, sets, p in pipelines:
        say(f"candidate {name}")
        invocation = Invocation(pipeline_path, sets, state.plugin_opts, state.only,
                                state.allow_code)
        report.candidates.append(_measure(name, p, data, invocation, pilot, say))
        if not report.budget:
            report.budget = int(budget_gb * GIB) if budget_gb else \
                memory_of_device(p.model.build())
    _finish(report)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n",
                                        encoding="utf-8")
    (folder / "report.md").write_text(report.markdown(), encoding="utf-8")
    plot(report, folder / "candidates.png")
    return report


def _measure(name: str, p: Any, data: dict[str, Any], invocation: Invocation, pilot: int,
             say: Callable[[str], None]) -> Candidate:
    """One candidate's figures."""
    provider = p.model.build()
    stage = p.stages[0]
    train = data[stage.data].train
    held_out = data[stage.data].eval
    c = Candidate(name, config_only=not provider.weights_present())
    if not held_out:
        # Nothing trains here (before a pilot), so the loss on training rows still says how
        # well each candidate knows this data; without it the choice fell to the smallest
        # model, a randomly initialised one included.
        held_out, c.loss_rows = train[:TRAINING_ROWS], "training"
    tokenizer = None
    try:
        tokenizer = provider.load_tokenizer()
    except Exception:  # a config alone has no tokenizer: its data figures stay unknown
        if not c.config_only:
            raise
    c.facts = card_facts(name, provider.source(), tokenizer)
    shape = meta_shape(provider, stage, train)
    c.cost = stage_cost(p, 0, provider, tokenizer, data,
                        None if c.config_only else invocation, shape)
    if tokenizer is not None:
        c.tokens_per_word = tokens_per_word(tokenizer, train)
    if c.config_only:
        return c
    say(f"candidate {name}: held-out loss and before-training evaluations")
    model = _load(provider, stage, train)
    c.heldout_loss, c.heldout_tokens = _heldout(p, stage, model, tokenizer, held_out,
                                                 data[stage.data].shape)
    for ev in p.evaluations:
        if ev.section.before:
            c.before[ev.name] = _evaluate(p, ev, data, model, tokenizer)
    del model
    if pilot:
        say(f"candidate {name}: pilot, {pilot} training steps")
        trained = _pilot(p, stage, provider, tokenizer, train, pilot)
        c.pilot_loss, _ = _heldout(p, stage, trained, tokenizer, held_out,
                                   data[stage.data].shape)
        # The same before-training evaluations, after the pilot: what a classifier learnt.
        for ev in p.evaluations:
            if ev.section.before:
                c.after_pilot[ev.name] = _evaluate(p, ev, data, trained, tokenizer)
    return c


def _load(provider: Any, stage: Any, train: list[dict[str, Any]]) -> Any:
    import torch

    torch.manual_seed(0)  # a new head's random init, the same for every candidate
    method = stage.method.build()
    return provider.load_model(stage.method.cls.task, **method.model_options(train))


def _loss_evaluator(p: Any, stage: Any, shape: str) -> Any | None:
    """The registered ``loss`` evaluator, cut at the stage's max_length.

    None where it does not apply (classification or preference data).
    """
    entry = p.plugins.registry.find("evaluator", "loss")
    if entry is None or shape not in entry.cls.accepts:
        return None
    cap = getattr(stage.method.config, "max_length", None) or \
        getattr(stage.method.config, "block_size", None) or 1024
    return entry.cls(entry.cls.Config(max_length=cap))


def _heldout(p: Any, stage: Any, model: Any, tokenizer: Any, held_out: list[dict[str, Any]],
             shape: str) -> tuple[float | None, int | None]:
    from ftp.contexts import EvalContext

    evaluator = _loss_evaluator(p, stage, shape)
    if evaluator is None or not held_out:
        return None, None
    result = evaluator.evaluate(EvalContext(stage="base", model=model, tokenizer=tokenizer,
                                            data=held_out, seed=p.seed, base_dir=p.base_dir))
    metrics = result.get("metrics", {})
    loss = metrics.get("loss")
    return (float(loss) if isinstance(loss, int | float) else None), metrics.get("tokens")


def _evaluate(p: Any, ev: Any, data: dict[str, Any], model: Any, tokenizer: Any
              ) -> dict[str, Any]:
    from ftp.contexts import EvalContext

    rows = data[ev.section.data].split(ev.section.split) if ev.section.data else None
    result = ev.evaluator.build().evaluate(EvalContext(
        stage="base", model=model, tokenizer=tokenizer, data=rows, seed=p.seed,
        base_dir=p.base_dir))
    return {k: v for k, v in (result.get("metrics") or {}).items()
            if isinstance(v, int | float)}


def _pilot(p: Any, stage: Any, provider: Any, tokenizer: Any, train: list[dict[str, Any]],
           steps: int) -> Any:
    """Train ``steps`` steps of the stage's method on its data; return the trained model."""
    import tempfile

    from ftp.contexts import TrainContext

    model = _load(provider, stage, train)
    if stage.adapter is not None:
        model = provider.apply_adapter(model, stage.adapter)
    config = stage.method.config.model_copy(update={"max_steps": steps, "save_strategy": "no"})
    with tempfile.TemporaryDirectory(prefix="ftp-pilot-") as tmp:
        ctx = TrainContext(stage=stage.name, model=model, tokenizer=tokenizer,
                           provider=provider, train=train, eval=None, adapter=stage.adapter,
                           output_dir=Path(tmp), seed=p.seed, on_bad_rows="skip")
        return stage.method.cls(config).train(ctx)


def _finish(report: Report) -> None:
    """Fit, time and the recommendation, once every candidate is measured."""
    rate = next((c.cost.flop_rate() for c in report.candidates
                 if c.cost and c.cost.flop_rate()), None)
    baseline = next((int(c.cost.probe["baseline_bytes"]) for c in report.candidates
                     if c.cost and c.cost.probe and c.cost.probe.get("ok")), 0)
    for c in report.candidates:
        if c.cost is None:
            continue
        if c.cost.measured is not None:
            c.peak = peak_of(c.cost)
        else:
            c.peak = c.cost.estimate.total + baseline
        c.fits = c.peak <= report.budget
        c.eta = c.cost.eta(rate)
        c.eta_how = "probe" if c.cost.seconds_per_step else (
            "FLOPs at another candidate's measured FLOP rate" if c.eta is not None else "")
    fitting = [c for c in report.candidates if c.fits]
    if not fitting:
        report.reasons = [f"nothing fits the memory budget of {gib(report.budget)}"] + [
            f"{c.name} needs about {gib(c.peak)}" for c in report.candidates if c.peak]
        return
    scored = [c for c in fitting if c.loss() is not None]
    what = "held-out loss after the pilot" if report.pilot else "held-out loss"
    if any(c.loss_rows == "training" for c in scored):
        what = ("loss on training rows after the pilot (which trained on them)" if report.pilot
                else "loss on training rows (no held-out split)")
    if scored:
        best = min(scored, key=lambda c: c.loss() or 0.0)
        good = [c for c in scored if (c.loss() or 0.0) <= (best.loss() or 0.0) * (1 + WITHIN)]
        pick = min(good, key=lambda c: c.parameters)
        report.choice = pick.name
        report.reasons = [
            f"the smallest model ({pick.parameters:,} parameters) within 5% of the best "
            f"{what} among those that fit {gib(report.budget)}",
            f"{what} {pick.loss():.4f}" + ("" if pick is best else
                                            f" vs the best {best.loss():.4f} ({best.name})"),
            f"needs about {gib(pick.peak)}",
        ]
        if pick.eta is not None:
            report.reasons.append(f"stage time about {minutes(pick.eta)}")
        left = [c.name for c in report.candidates if not c.fits]
        if left:
            report.reasons.append(f"not fitting: {', '.join(left)}")
        return
    judged = [c for c in fitting if c.accuracy() is not None]
    if judged:  # classifiers after --pilot: the pipeline's accuracy, higher is better
        best = max(judged, key=lambda c: c.accuracy() or 0.0)
        good = [c for c in judged
                if (c.accuracy() or 0.0) >= (best.accuracy() or 0.0) * (1 - WITHIN)]
        pick = min(good, key=lambda c: c.parameters)
        report.choice = pick.name
        report.reasons = [
            f"the smallest model ({pick.parameters:,} parameters) within 5% of the best "
            f"accuracy after the pilot among those that fit {gib(report.budget)}",
            f"accuracy {pick.accuracy():.4f}" + ("" if pick is best else
                                                 f" vs the best {best.accuracy():.4f} "
                                                 f"({best.name})"),
            f"needs about {gib(pick.peak)}"]
        return
    pick = min(fitting, key=lambda c: c.parameters)
    report.choice = pick.name
    report.reasons = [f"the smallest model ({pick.parameters:,} parameters) that fits "
                      f"{gib(report.budget)} (needs about {gib(pick.peak)})",
                      "no held-out loss to compare (the loss evaluator does not apply to this "
                      "data, or the candidates are configs only)"]
    if not report.pilot:
        report.reasons.append("run with --pilot N to compare them after N training steps")


def plot(report: Report, path: Path) -> None:
    """candidates.png: held-out loss against peak memory and against stage time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    shown = [c for c in report.candidates if c.loss() is not None]
    for ax, (label, value) in zip(axes, (
            ("peak memory (GiB)", lambda c: (c.peak or 0) / GIB),
            ("stage time (min)", lambda c: (c.eta or float("nan")) / 60)), strict=True):
        for c in shown:
            x = value(c)
            ax.scatter([x], [c.loss()], s=40)
            ax.annotate(c.name, (x, c.loss() or 0.0), fontsize=8, xytext=(4, 4),
                        textcoords="offset points")
        if report.budget and label.startswith("peak"):
            ax.axvline(report.budget / GIB, linestyle="--", color="grey", linewidth=1)
        ax.set_xlabel(label)
        ax.set_ylabel("held-out loss" + (" after the pilot" if report.pilot else ""))
        ax.grid(alpha=0.3)
    if not shown:
        fig.suptitle("no candidate has a held-out loss (classification data or configs "
                     "only): see report.md")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
