"""``ftp plan`` and ``ftp run --preflight``: whether each stage fits, and how long it takes.

Per stage: the estimate (`ftp.planning.sizing`) and one probe on the longest batch the
method keeps and a typical one (`ftp.planning.probe`) → peak memory, seconds per step, the
stage's ETA (the fitted seconds of every batch it will run, `ftp.planning.eta`) and its upper
bound (every step as long as the longest batch's). The
first stage's probe also times each evaluation on a sample (a few rows, one prompt), scaled
to the whole evaluation and to every time the run evaluates it. The pipeline's ETA is the
stages' and the evaluations' (loading, tokenizing and saving are not in it).
A stage whose measured peak (plus the libraries' baseline) exceeds the memory budget (the
device's memory unless ``--memory-budget`` says otherwise) will not fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ftp.config import Pipeline
from ftp.planning.sizing import GIB, gib
from ftp.planning.stages import (
    Invocation,
    StageCost,
    evaluation_specs,
    memory_of_device,
    prepare_data,
    stage_cost,
)


@dataclass
class Plan:
    """Every stage's cost against the budget.

    Attributes:
        stages: One `StageCost` per stage.
        budget: The memory budget, in bytes.
        device: ``cpu`` or ``cuda``.
        problems: Warnings: stages that will not fit, probes that failed.
        expected_evaluations: Evaluations the run will run (the first probe times each).

    """

    stages: list[StageCost]
    budget: int
    device: str
    problems: list[str] = field(default_factory=list)
    expected_evaluations: int = 0

    @property
    def fits(self) -> bool:
        """Whether no stage is over the budget.

        A stage that could not be probed is a problem too: nothing says it fits.
        """
        return not self.problems

    def eta(self) -> float | None:
        """Seconds of training for the whole pipeline, or None when a stage's is unknown."""
        etas = [s.eta() for s in self.stages]
        return None if any(e is None for e in etas) else sum(e for e in etas if e is not None)

    def upper_bound(self) -> float | None:
        """Seconds of training if every step took its stage's longest batch's time."""
        bounds = [s.upper_bound() for s in self.stages]
        return None if any(b is None for b in bounds) else sum(b for b in bounds if b)

    def evaluations(self) -> list[dict[str, Any]]:
        """The evaluations the first probe timed (`ftp.planning.probe`), or []."""
        first = self.stages[0].probe if self.stages else None
        return list((first or {}).get("evaluations") or [])

    def evaluation_eta(self) -> float | None:
        """Seconds of every evaluation run (0 without any), or None when one is unknown."""
        timed = self.evaluations()
        if len(timed) < self.expected_evaluations or any("seconds" not in e for e in timed):
            return None
        return sum(float(e["seconds"]) for e in timed)

    def total_eta(self) -> float | None:
        """Training and evaluations, or None when either is unknown."""
        train, evals = self.eta(), self.evaluation_eta()
        return None if train is None or evals is None else train + evals

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {"device": self.device, "budget_bytes": self.budget, "fits": self.fits,
                "eta_seconds": self.eta(), "upper_bound_seconds": self.upper_bound(),
                "evaluation_seconds": self.evaluation_eta(),
                "total_eta_seconds": self.total_eta(), "evaluations": self.evaluations(),
                "problems": self.problems, "stages": [s.as_dict() for s in self.stages]}


def peak_of(cost: StageCost) -> int:
    """The stage's expected process peak: measured + baseline, else the estimate."""
    if cost.measured is not None and cost.probe:
        return cost.measured + int(cost.probe.get("baseline_bytes", 0))
    return cost.estimate.total


def make_plan(pipeline: Pipeline, invocation: Invocation, budget_gb: float | None,
              say: Callable[[str], None] = lambda line: None) -> Plan:
    """Probe every stage of ``pipeline``; compare each with the budget."""
    say("preparing data")
    data = prepare_data(pipeline)
    provider = pipeline.model.build()
    tokenizer = provider.load_tokenizer()
    budget = int(budget_gb * GIB) if budget_gb else memory_of_device(provider)
    evaluations = evaluation_specs(pipeline, data)
    plan = Plan([], budget, getattr(provider, "device", lambda: "cpu")(),
                expected_evaluations=len(evaluations))
    for i, stage in enumerate(pipeline.stages):
        say(f"probing stage {stage.name!r} ({stage.method.entry.name}): 3 to 6 steps on its "
            "longest batch and as many on a typical one"
            + (", then each evaluation on a sample" if i == 0 and evaluations else ""))
        cost = stage_cost(pipeline, i, provider, tokenizer, data, invocation,
                          evaluations=evaluations if i == 0 else None)
        plan.stages.append(cost)
        if cost.probe is not None and not cost.probe.get("ok"):
            plan.problems.append(f"stage {stage.name!r}: the probe failed: "
                                 f"{cost.probe.get('error')}")
        elif peak_of(cost) > budget:
            plan.problems.append(
                f"stage {stage.name!r} will not fit: it needs about {gib(peak_of(cost))} "
                f"against {gib(budget)}; lower batch_size or max_length, use an adapter or "
                "gradient_checkpointing = true")
    return plan


def minutes(seconds: float | None) -> str:
    """``12.3 min`` / ``45 s`` / ``unknown``."""
    if seconds is None:
        return "unknown"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def render_plan(plan: Plan) -> list[str]:
    """The plan as terminal lines: a table of stages and the total."""
    head = ("stage", "method", "batch × tokens", "estimated", "measured", "s/step", "steps",
            "ETA", "at most")
    rows = []
    for s in plan.stages:
        rows.append((s.stage, s.method,
                     f"{s.setting.batch} × {s.setting.sequences_per_row} × {s.setting.sequence}",
                     gib(s.estimate.total), gib(s.measured),
                     f"{s.seconds_per_step:.2f}" if s.seconds_per_step else "unknown",
                     str(s.steps), minutes(s.eta()), minutes(s.upper_bound())))
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [head, *rows]]
    base = next((s.probe.get("baseline_bytes") for s in plan.stages
                 if s.probe and s.probe.get("ok")), None)
    lines.append(f"memory: estimated and measured are above the libraries' baseline "
                 f"({gib(base)}); budget {gib(plan.budget)} ({plan.device})")
    lines.append("s/step: the longest batch's; ETA: seconds fitted to the tokens of each step "
                 "summed over the steps; at most: every step as long as the longest")
    lines.append(f"ETA for training, all stages: {minutes(plan.eta())} "
                 f"(at most {minutes(plan.upper_bound())})")
    for e in plan.evaluations():
        if "seconds" in e:
            lines.append(f"  evaluation {e['name']!r}: {minutes(e['seconds'])} for {e['runs']} "
                         f"run(s) (timed on a sample, scaled {e['scale']:.1f}×)")
        else:
            lines.append(f"  evaluation {e['name']!r}: unknown ({e.get('error')})")
    if plan.expected_evaluations:
        lines.append(f"ETA for evaluations: {minutes(plan.evaluation_eta())}")
    lines.append(f"ETA for the whole pipeline: {minutes(plan.total_eta())} (loading, "
                 "tokenizing and saving not included)")
    return lines
