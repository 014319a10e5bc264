"""Kill a pipeline at random steps with SIGKILL, resume it, compare with an uninterrupted run.

    python benchmarks/resume.py [PIPELINE] [--kills 5] [--every 5] [--seed N] [--workdir DIR]

PIPELINE defaults to examples/quickstart.toml. Every run logs every step
(``logging_steps = 1`` on each stage) so that per-step losses can be compared. It runs:

1. the pipeline with scheduled checkpoints off (``checkpoint_every = "off"``), timed;
2. the pipeline with a checkpoint every ``--every`` steps, timed: the reference;
3. ``--kills`` times: the checkpointed pipeline, killed with SIGKILL from outside as soon as
   metrics.jsonl shows a randomly chosen step, then ``ftp resume``.

It prints, per kill, the step it hit and the largest absolute differences from the reference
in the per-step losses and in the final model's weights, and the checkpoint overhead: the
wall-time difference between runs 2 and 1 and the disk the kept checkpoints take. Run it on an
otherwise idle machine: wall times taken under load are not worth printing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "examples" / "quickstart.toml"


def ftp(*args: str, log: Path) -> tuple[subprocess.Popen, float]:
    """Start ``ftp ARGS`` with its output going to ``log``; return it and its start time."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "ftp", *args], stdout=out,
                            stderr=subprocess.STDOUT, env=env)
    return proc, time.perf_counter()


def finish(proc: subprocess.Popen, started: float, what: str, log: Path) -> float:
    """Wait for ``proc``; fail loudly (with its log's tail) unless it succeeded."""
    code = proc.wait()
    took = time.perf_counter() - started
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        sys.exit(f"{what} failed with exit code {code}:\n{tail}")
    return took


def stage_count(pipeline: Path) -> int:
    """How many stages the pipeline file lists."""
    import tomllib

    return len(tomllib.loads(pipeline.read_text(encoding="utf-8"))["stages"])


def losses(run: Path) -> dict[tuple[str, int], float]:
    """(stage, step) → logged loss; exits when a step is recorded twice."""
    found: dict[tuple[str, int], float] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record and "event" not in record:
            key = (record["stage"], record["step"])
            if key in found:
                sys.exit(f"{run}: step {key} is recorded twice in metrics.jsonl")
            found[key] = float(record["loss"])
    return found


def weight_diff(a: Path, b: Path) -> float:
    """The largest absolute difference between two saved models' weights."""
    from safetensors.torch import load_file

    wa = {}
    wb = {}
    for f in sorted(a.glob("*.safetensors")):
        wa.update(load_file(str(f)))
    for f in sorted(b.glob("*.safetensors")):
        wb.update(load_file(str(f)))
    if wa.keys() != wb.keys():
        sys.exit(f"{a} and {b} hold different weights")
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


def folder_size(folder: Path) -> int:
    """Bytes in a folder's files."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def kill_at_step(proc: subprocess.Popen, metrics: Path, step: int) -> int | None:
    """SIGKILL ``proc`` once metrics.jsonl shows a training step >= ``step``; return it."""
    while proc.poll() is None:
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                try:
                    seen = json.loads(line).get("step")
                except ValueError:
                    continue
                if isinstance(seen, int) and seen >= step:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return seen
        time.sleep(0.05)
    return None


def main() -> None:
    """Run the comparison and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", type=Path, nargs="?", default=DEFAULT)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--every", type=int, default=5, help="checkpoint every N steps")
    parser.add_argument("--seed", type=int, default=None, help="for the kill points")
    parser.add_argument("--workdir", type=Path, default=Path("runs") / "bench-resume")
    args = parser.parse_args()
    pipeline = args.pipeline.resolve()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    logged = [f"--set=stages[{i}].logging_steps=1" for i in range(stage_count(pipeline))]

    def start(name: str, *extra: str) -> tuple[subprocess.Popen, float, Path]:
        log = work / f"{name}.log"
        proc, t0 = ftp("run", str(pipeline), "-o", str(work / name), "--overwrite", *logged,
                       *extra, log=log)
        return proc, t0, log

    proc, t0, log = start("off", '--set=pipeline.checkpoint_every="off"')
    wall_off = finish(proc, t0, "the run without checkpoints", log)
    proc, t0, log = start("ref", f"--set=pipeline.checkpoint_every={args.every}")
    wall_on = finish(proc, t0, "the reference run", log)
    ref = work / "ref"
    ref_losses = losses(ref)
    steps = max(step for _, step in ref_losses)
    disk = sum(folder_size(d) for d in ref.glob("stages/*/checkpoints"))
    if ref_losses != losses(work / "off"):
        print("note: per-step losses differ between checkpoints on and off")

    print(f"pipeline: {pipeline}, {len(ref_losses)} logged steps, checkpoint every "
          f"{args.every} steps, keep_checkpoints as the pipeline says")
    print(f"{'kill':>4} {'at step':>8} {'max |loss diff|':>16} {'max |weight diff|':>18}")
    worst_loss = worst_weight = 0.0
    for k in range(1, args.kills + 1):
        name = f"kill-{k}"
        target = rng.randint(1, max(1, steps - 1))
        proc, _, log = start(name, f"--set=pipeline.checkpoint_every={args.every}")
        hit = kill_at_step(proc, work / name / "metrics.jsonl", target)
        if hit is None:
            print(f"{k:>4} the run ended before step {target}; not counted")
            continue
        resumed, t0 = ftp("resume", str(work / name), log=work / f"{name}-resume.log")
        finish(resumed, t0, f"resuming {name}", work / f"{name}-resume.log")
        run_losses = losses(work / name)
        if run_losses.keys() != ref_losses.keys():
            sys.exit(f"{name}: the resumed run logged other steps than the reference")
        dl = max(abs(run_losses[s] - ref_losses[s]) for s in ref_losses)
        dw = weight_diff(work / name / "model", ref / "model")
        worst_loss, worst_weight = max(worst_loss, dl), max(worst_weight, dw)
        print(f"{k:>4} {hit:>8} {dl:>16.3g} {dw:>18.3g}")
    print(f"largest differences: loss {worst_loss:.3g}, weights {worst_weight:.3g}")
    print(f"checkpoint overhead: wall {wall_on - wall_off:+.1f} s ({wall_off:.1f} s off, "
          f"{wall_on:.1f} s on), disk {disk / 2**20:.1f} MiB kept")


if __name__ == "__main__":
    main()
