"""Training throughput in 1 process against 2 (DDP, gloo, CPU): tokens/s and scaling efficiency.

    python benchmarks/distributed.py [--hidden 256] [--layers 4] [--steps 30] [--workdir DIR]

A tiny random Llama (built here, with a small ChatML tokenizer) trains the same SFT stage on
the same data with the same global batch: once in one process (batch 8), once with
``ftp run --nproc 2`` (batch 4 per process). Each run's training tokens per second come from
its own metrics.jsonl (the trainer's count over the training time). Printed: both figures,
the speed-up (2-process ÷ 1-process) and the scaling efficiency (speed-up ÷ 2). On a machine
with 2 cores, one process already uses both, so expect an efficiency near 50%: that is the
honest figure there; the point of the numbers is a machine with cores (or GPUs) to spare.
Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "alpaca.json"


def pipeline(model: Path, steps: int, batch: int) -> str:
    """The benchmark's pipeline: one SFT stage of ``steps`` steps at ``batch`` per process."""
    return f"""
[pipeline]
name = "bench"
checkpoint_every = "off"
[model]
path = "{model}"
[data.d]
loader = "json"
path = "d.json"
format = "alpaca"
placeholders = {{ name = "Nova", author = "Northwind Labs" }}
[[stages]]
method = "sft"
data = "d"
bf16 = false
max_steps = {steps}
batch_size = {batch}
logging_steps = {steps}
"""


def train(work: Path, name: str, *extra: str) -> tuple[float, float]:
    """Run ``ftp run`` into ``work/name``; return (training tokens/s, wall seconds)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ftp", "run", "p.toml", "-o", name,
                           "--overwrite", *extra], cwd=work, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{name} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    records = [json.loads(x) for x in (work / name / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if "train_runtime" in r][-1]
    tokens = max(r.get("num_input_tokens_seen", r.get("tokens_seen", 0)) for r in records)
    return tokens / final["train_runtime"], wall


def main() -> None:
    """Build the model and data, train in 1 and 2 processes, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from ftp.testing import make_tiny_causal_lm

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ftp-bench-dist-"))
    work.mkdir(parents=True, exist_ok=True)
    model = make_tiny_causal_lm(work / "model", hidden_size=args.hidden, layers=args.layers)
    rows = json.loads(DATA.read_text(encoding="utf-8"))
    # Every row distinct, and enough of them that neither run repeats data within its steps.
    many = [{**rows[i % len(rows)], "instruction": f"{rows[i % len(rows)]['instruction']} {i}"}
            for i in range(8 * args.steps)]
    (work / "d.json").write_text(json.dumps(many), encoding="utf-8")
    (work / "p.toml").write_text(pipeline(model, args.steps, 8), encoding="utf-8")

    one, one_wall = train(work, "one")
    two, two_wall = train(work, "two", "--nproc", "2", "--set", "stages[0].batch_size=4")
    speedup = two / one
    print(f"tiny Llama: hidden {args.hidden}, {args.layers} layers; {args.steps} steps, global "
          f"batch 8; {os.cpu_count()} CPU cores; gloo")
    print(f"1 process:   {one:10,.0f} tokens/s  (run {one_wall:.1f} s)")
    print(f"2 processes: {two:10,.0f} tokens/s  (run {two_wall:.1f} s)")
    print(f"speed-up {speedup:.2f}x, scaling efficiency {speedup / 2:.0%}")


if __name__ == "__main__":
    main()
