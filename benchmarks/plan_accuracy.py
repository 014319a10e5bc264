"""``ftp plan``'s ETA and upper bound for the examples, beside the real runs' times.

    python benchmarks/plan_accuracy.py [EXAMPLE ...] [--runs FOLDER] [--set KEY=VALUE ...]
                                       [--json]

For each example (default: every ``examples/*.toml``), ``ftp plan EXAMPLE --json`` runs as a
user would run it; the table gives the plan's training ETA, its upper bound (every step at the
longest batch's time), the whole pipeline's ETA (evaluations included) and how long ``ftp
plan`` itself took; below it, each stage's probe: the seconds of every step it timed on the
longest and the typical batch (3 to 6 each), the steady seconds and the warm-up. Where
``--runs FOLDER`` holds a finished run of the example, in ``FOLDER/NAME`` (NAME: the
example's file name without ``.toml``), its run.json gives the real time: the whole run's
``seconds``, and the training stages' from its ``timings``. ``--set`` values go to every plan
(``--set stages[0].max_steps=2`` for a smoke test); a real run compared must then have been
run with the same values.

Run it alone on the machine: the plans are timed, and any other load skews them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@dataclass
class Row:
    """One example's plan, and its real run where one was given (seconds; None: unknown)."""

    example: str
    eta: float | None
    upper_bound: float | None
    total_eta: float | None
    plan_seconds: float
    real_training: float | None
    real_total: float | None
    error: str = ""
    probes: list[str] = field(default_factory=list)


def real_times(run: Path) -> tuple[float | None, float | None]:
    """(training stages' seconds, the whole run's) from a finished run's run.json."""
    try:
        data = json.loads((run / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if data.get("status") != "finished":
        return None, None
    timings = data.get("timings") or {}
    # The runner times each stage's training as "stage 'NAME': train (METHOD)".
    training = [float(v) for k, v in timings.items()
                if str(k).startswith("stage") and ": train (" in str(k)]
    total = data.get("seconds")
    return (sum(training) if training else None,
            float(total) if isinstance(total, int | float) else None)


def plan_one(example: Path, sets: list[str], runs: Path | None) -> Row:
    """Plan ``example`` with ``ftp plan --json``; find its real run under ``runs``."""
    args = [sys.executable, "-m", "ftp", "plan", str(example), "--json"]
    for value in sets:
        args += ["--set", value]
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, cwd=example.parent)
    took = time.perf_counter() - started
    real: tuple[float | None, float | None] = (None, None)
    if runs is not None:
        real = real_times(runs / example.stem)
    try:
        plan: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Row(example.stem, None, None, None, took, *real, error=tail)
    return Row(example.stem, plan.get("eta_seconds"), plan.get("upper_bound_seconds"),
               plan.get("total_eta_seconds"), took, *real,
               error="; ".join(plan.get("problems") or []),
               probes=[probe_line(stage) for stage in plan.get("stages") or []])


def probe_line(stage: dict[str, Any]) -> str:
    """What one stage's probe timed: each step's seconds on the longest and typical batches."""
    probe = stage.get("probe") or {}
    if not probe.get("ok"):
        return f"{stage.get('stage')}: no probe ({probe.get('error')})"

    def steps(times: list[float] | None) -> str:
        return ", ".join(f"{t:.2f}" for t in times or []) or "-"

    typical = probe.get("typical") or {}
    return (f"{stage.get('stage')}: {probe.get('seconds_per_step', 0):.2f} s/step on "
            f"{stage.get('probe_batch_tokens')} tokens (steps {steps(probe.get('steps'))}); "
            f"typical {typical.get('seconds', 0):.2f} s (steps {steps(typical.get('steps'))})"
            f"; warm-up {probe.get('warmup_seconds', 0):.2f} s")


def minutes(seconds: float | None) -> str:
    """``1.5`` minutes, or ``-`` when unknown."""
    return "-" if seconds is None else f"{seconds / 60:.1f}"


def table(rows: list[Row]) -> list[str]:
    """The rows as a terminal table, minutes."""
    head = ("example", "ETA train", "at most", "ETA all", "real train", "real all",
            "ETA/real", "plan took")
    lines = []
    for r in rows:
        ratio = (f"{r.eta / r.real_training:.2f}" if r.eta and r.real_training else "-")
        lines.append((r.example, minutes(r.eta), minutes(r.upper_bound), minutes(r.total_eta),
                      minutes(r.real_training), minutes(r.real_total), ratio,
                      minutes(r.plan_seconds)))
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(x, widths, strict=True)).rstrip()
           for x in [head, *lines]]
    out.append("(minutes; ETA train: fitted to each step's tokens; at most: every step at the "
               "longest batch's time; real: from the runs' run.json)")
    out += [f"{r.example}: {r.error}" for r in rows if r.error]
    out += [f"{r.example} probe, {line}" for r in rows for line in r.probes]
    return out


def main() -> int:
    """Plan each example in turn and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("examples", nargs="*", help="example names or .toml files "
                        "(default: every examples/*.toml)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="folder of finished runs, one per example (FOLDER/NAME)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        metavar="KEY=VALUE", help="passed to every ftp plan")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    examples = ([Path(e) if e.endswith(".toml") else EXAMPLES / f"{e}.toml"
                 for e in args.examples] or sorted(EXAMPLES.glob("*.toml")))
    rows = []
    for example in examples:
        print(f"planning {example.name}", file=sys.stderr)
        rows.append(plan_one(example.resolve(), args.sets, args.runs))
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print("\n".join(table(rows)))
    return 0 if all(r.eta is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
