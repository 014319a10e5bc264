"""ftp's memory estimate against the measured peak, for SmolLM2 and MiniLM, LoRA and full.

    python benchmarks/memory_estimates.py [--json] [--only smollm2|minilm]

For each case below, the example's own training stage (its batch size, max_length, data and
dtype; only the adapter changes between the LoRA and the full case) goes through ``ftp plan
--json``, which gives both figures from one command:

- *estimated*: `ftp.planning.sizing.estimate_memory` on the model's shape (built on the meta
  device, no weights read) and the longest batch the stage's method keeps;
- *measured*: the probe `ftp plan` runs, in a child process: two real training steps of the
  stage's method on that batch, peak resident memory (or ``max_memory_allocated`` on a GPU)
  above the libraries' baseline (torch, transformers, TRL, peft and datasets imported).

The error is (estimated − measured) ÷ measured: negative when the estimate is low. The cases
run one after the other (never two trainings at once). Memory figures are fair on a busy
machine; this script prints no times.

Each case is the example's pipeline copied into a temporary folder (next to a link to
examples/data, so its relative data paths hold) with the adapter line removed or added, and
its evaluations left out (``ftp plan`` does not run them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: The adapter the LoRA cases train: the quickstart's own.
LORA = 'adapter = { type = "lora", r = 16, alpha = 32, target_modules = "all-linear" }'


@dataclass
class Case:
    """One model × finetuning kind, at an example's settings."""

    model: str
    example: str
    finetuning: str  # "lora" or "full"


CASES = [
    Case("smollm2-135m-instruct", "quickstart.toml", "lora"),
    Case("smollm2-135m-instruct", "quickstart.toml", "full"),
    Case("all-minilm-l6-v2", "sentiment.toml", "lora"),
    Case("all-minilm-l6-v2", "sentiment.toml", "full"),
]


@dataclass
class Row:
    """What one case gave (bytes; None where the probe failed)."""

    model: str
    example: str
    finetuning: str
    batch: int
    sequence: int
    trainable: int
    estimated: int
    measured: int | None
    baseline: int | None
    error: float | None
    parts: dict[str, int]
    problem: str = ""


def pipeline_text(case: Case) -> str:
    """The example's pipeline with the case's adapter and no evaluations."""
    text = (EXAMPLES / case.example).read_text(encoding="utf-8")
    text = text.split("\n[[evaluate]]")[0]  # plan runs no evaluation; the stage comes first
    adapter = re.compile(r"^adapter\s*=.*$", re.MULTILINE)
    text = adapter.sub("", text)
    if case.finetuning == "lora":
        # The stage's first line after [[stages]] keeps the adapter in the stage's table.
        text = text.replace("[[stages]]\n", "[[stages]]\n" + LORA + "\n", 1)
    return text


def run_case(case: Case, folder: Path) -> Row:
    """``ftp plan --json`` on the case's pipeline; the stage's estimate and measured peak."""
    path = folder / f"{Path(case.example).stem}-{case.finetuning}.toml"
    path.write_text(pipeline_text(case), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-m", "ftp", "plan", path.name, "--json"],
                          cwd=folder, capture_output=True, text=True, env=env)
    try:
        plan = json.loads(done.stdout)
    except ValueError:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"{case.example} ({case.finetuning}): ftp plan failed "
                         f"(exit {done.returncode}): {tail}") from None
    (stage,) = plan["stages"]
    estimate = stage["estimate"]
    measured = stage["measured_bytes"]
    probe = stage["probe"] or {}
    return Row(
        model=case.model, example=case.example, finetuning=case.finetuning,
        batch=stage["setting"]["batch"] * stage["setting"]["sequences_per_row"],
        sequence=stage["setting"]["sequence"], trainable=stage["shape"]["trainable"],
        estimated=estimate["total"], measured=measured,
        baseline=probe.get("baseline_bytes"),
        error=(estimate["total"] - measured) / measured if measured else None,
        parts={k: estimate[k] for k in ("weights", "gradients", "optimizer", "activations",
                                        "logits", "reference")},
        problem="" if probe.get("ok") else str(probe.get("error")))


def mib(n: int | None) -> str:
    """``123.4 MiB`` or ``—``."""
    return "—" if n is None else f"{n / 2 ** 20:.1f} MiB"


def table(rows: list[Row]) -> list[str]:
    """The rows as aligned terminal lines."""
    head = ["model", "example", "finetuning", "batch × tokens", "trained params", "estimated",
            "measured", "error", "baseline"]
    body = [[r.model, r.example, r.finetuning, f"{r.batch} × {r.sequence}", f"{r.trainable:,}",
             mib(r.estimated), mib(r.measured),
             "—" if r.error is None else f"{r.error:+.0%}", mib(r.baseline)] for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(x, widths, strict=True)).rstrip()
             for x in [head, *body]]
    lines.append("estimated: ftp's arithmetic (no weights run); measured: the peak of two "
                 "real training steps on the same batch, in a child process, above the "
                 "libraries' baseline; error = (estimated - measured) / measured")
    lines += [f"{r.model} {r.finetuning}: the probe failed: {r.problem}" for r in rows
              if r.problem]
    return lines


def main() -> int:
    """Run every case; print the table (or JSON); exit 1 when a probe failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="Print the rows as JSON.")
    parser.add_argument("--only", choices=["smollm2", "minilm"], default=None,
                        help="Only the cases of one model.")
    args = parser.parse_args()
    cases = [c for c in CASES if args.only is None or c.model.startswith(
        {"smollm2": "smollm2", "minilm": "all-minilm"}[args.only])]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ftp-memory-estimates-") as tmp:
        folder = Path(tmp)
        (folder / "data").symlink_to(EXAMPLES / "data")
        for case in cases:
            print(f"{case.model} ({case.example}, {case.finetuning}): planning",
                  file=sys.stderr, flush=True)
            rows.append(run_case(case, folder))
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print("\n".join(table(rows)))
    return 1 if any(r.problem for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
