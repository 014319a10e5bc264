"""The measured probe: steps of a stage's own method on its longest batch, in a child.

`run_probe` writes a spec (the pipeline, its ``--set`` values, the stage, the candidate
batches of rows, longest first) and runs ``python -m ftp.planning.probe SPEC`` in a child
process, so that nothing it allocates stays in the caller. The child loads the pipeline and
the stage's model as ``ftp run`` does, notes its memory once torch, transformers, TRL, peft
and datasets are imported (the libraries' baseline), then trains the stage's method on the
first batch the method keeps (gradient accumulation 1): a batch the method refuses (a
`UserError`, or a ``tokenized`` event that reports dropped rows) is skipped for the next one.

Steps: up to the spec's ``steps`` (6) on the same batch, stopping once two consecutive steps
after the first agree within 10% (`settled`, never before the third step): the first steps on
a fresh shape are slower than a run's steady state (oneDNN primitives, the allocator warming
up), and two steps extrapolated that 2–3x. Seconds per step are the last two steps' mean;
what the steps before them took over it is ``warmup_seconds``, paid once by a run (`steady`).
The probe's cost: 3 to 6 steps on the longest batch, as many on a typical one.

Memory: the peak of the training phase alone, above the baseline. The peak is reset when
training begins (after the model's load, the adapter, the trainer's dataset preparation) and
read after the longest batch's steps: on CPU the child's own high-water mark (``VmHWM``,
reset through ``/proc/self/clear_refs``), on a GPU ``torch.cuda.max_memory_allocated``.
(``ru_maxrss`` was used before: a child started by ``subprocess`` (vfork, then exec) inherits
its parent's high-water mark in it, so the probe reported the parent's peak whenever it was
higher, e.g. after ``ftp models compare`` had loaded a candidate in the parent; and it counted
the model's load.) The weights stay resident, so they are in the peak; what loading held only
for a moment is not.

Then steps on a typical batch (the spec's ``typical`` candidates, median length first): the
ETA's second point (`ftp.planning.eta`). Where the spec gives ``count_rows``, the method's own
trainer is built on every row and its dataset counted (the rows training keeps, for methods
that tokenize inside their trainer). Then, where the spec lists evaluations, each is run once
on a sample (a few rows, or one of its prompts) and its time scaled to the whole evaluation
and to every time the pipeline runs it (before training, after stages).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ftp.errors import RunError, UserError


def run_probe(spec: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    """Run the probe described by ``spec`` in a child process and return what it measured.

    Returns:
        ``{"ok": True, "peak_bytes", "baseline_bytes", "seconds_per_step", "device",
        "rows", "tried", "evaluations"}`` or ``{"ok": False, "error": "..."}``.

    """
    with tempfile.TemporaryDirectory(prefix="ftp-probe-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        result_path = Path(tmp) / "result.json"
        spec_path.write_text(json.dumps({**spec, "result": str(result_path),
                                         "output_dir": str(Path(tmp) / "out")}),
                             encoding="utf-8")
        env = dict(os.environ)
        for key, value in (("TOKENIZERS_PARALLELISM", "false"),
                           ("TRANSFORMERS_VERBOSITY", "error"),
                           ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                           ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")):
            env.setdefault(key, value)
        try:
            done = subprocess.run([sys.executable, "-m", "ftp.planning.probe", str(spec_path)],
                                  capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"the probe took over {timeout:.0f} s"}
        if result_path.is_file():
            return dict(json.loads(result_path.read_text(encoding="utf-8")))
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "error": f"the probe process failed (exit {done.returncode}): "
                f"{tail}"}


def _rss() -> int:
    """The resident memory of this process now, in bytes."""
    with open("/proc/self/statm", encoding="ascii") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


#: Two consecutive steps within this fraction of each other are the steady state.
AGREE = 0.10
#: The fewest steps before the probe may stop: the first (warm-up), then two to compare.
LEAST_STEPS = 3


def settled(times: list[float]) -> bool:
    """Whether the probe may stop timing a batch: `LEAST_STEPS` steps, the last two agreeing.

    The first step never counts (it creates the shape's kernels); from the third on, the
    last two steps within `AGREE` of the faster are taken as the steady state.
    """
    if len(times) < LEAST_STEPS:
        return False
    a, b = times[-2], times[-1]
    return abs(a - b) <= AGREE * min(a, b)


def steady(times: list[float]) -> tuple[float, float]:
    """``(seconds per step, warm-up seconds)`` from one batch's step times, in order.

    Seconds per step: the mean of the last two steps (never the first, unless it is the only
    one). Warm-up: what each step before those took over it, summed, paid once by a run.
    """
    if not times:
        raise ValueError("no step was timed")
    later = times[1:][-2:] or times[:1]
    per_step = sum(later) / len(later)
    before = times[:len(times) - len(later)]
    return per_step, sum(max(t - per_step, 0.0) for t in before)


def _reset_peak(on_gpu: bool) -> None:
    """Start the high-water mark afresh from now (Linux: ``5`` to ``/proc/self/clear_refs``).

    Where the kernel refuses, the peak read later also covers what came before (the load).
    """
    if on_gpu:
        import torch

        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss() -> int:
    """The peak resident memory of this process alone since `_reset_peak` (``VmHWM``), in bytes.

    Not ``ru_maxrss``: after vfork and exec it carries the parent's high-water mark.
    """
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    return _rss()


class _Refused(Exception):
    """The method leaves rows of this batch out: try the next batch."""


def _probe(spec: dict[str, Any]) -> dict[str, Any]:
    import datasets  # noqa: F401  # the libraries' baseline includes every one training uses
    import peft  # noqa: F401
    import torch
    import transformers
    import trl  # noqa: F401

    from ftp.config import load_pipeline
    from ftp.contexts import TrainContext
    from ftp.plugins import load_plugins
    from ftp.training import TrainerMethod

    pipeline = load_pipeline(Path(spec["pipeline"]), load_plugins(
        tuple(spec.get("plugin_opts", ())), only=spec.get("only")), list(spec["overrides"]),
        allow_code=spec.get("allow_code", False))
    stage = pipeline.stages[spec["stage"]]
    if not issubclass(stage.method.cls, TrainerMethod):
        return {"ok": False, "error": f"method {stage.method.entry.name!r} is not built on "
                "ftp.TrainerMethod; it cannot be run for a fixed number of steps"}
    provider = pipeline.model.build()
    tokenizer = provider.load_tokenizer()
    method_cls = stage.method.cls
    config = stage.method.config.model_copy(update={
        "max_steps": int(spec.get("steps", 6)), "gradient_accumulation": 1,
        "logging_steps": 1, "save_strategy": "no"})
    on_gpu = getattr(provider, "device", lambda: "cpu")() == "cuda"
    baseline = _rss()
    torch.manual_seed(pipeline.seed)
    model = provider.load_model(method_cls.task, **method_cls(config).model_options(
        spec["option_rows"]))
    if stage.adapter is not None:
        model = provider.apply_adapter(model, stage.adapter)

    times: list[float] = []

    class Timer(transformers.TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            _reset_peak(on_gpu)  # the peak is the training's, not the load's or the parent's

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            times.append(-time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            times[-1] += time.perf_counter()
            if settled(times):
                control.should_training_stop = True

    def log(record: dict[str, Any]) -> None:
        if record.get("event") == "tokenized" and record.get("dropped"):
            raise _Refused(f"{record['dropped']} row(s) left out")
        if record.get("event") == "skipped":
            raise _Refused(str(record.get("reason")))

    def attempt(n: int, rows: list[dict[str, Any]], tried: list[str]) -> bool:
        times.clear()
        ctx = TrainContext(stage=stage.name, model=model, tokenizer=tokenizer,
                           provider=provider, train=rows, eval=None, adapter=stage.adapter,
                           output_dir=Path(spec["output_dir"]) / str(n), seed=pipeline.seed,
                           callbacks=[Timer()], log=log, on_bad_rows="error")
        try:
            method_cls(config).train(ctx)
        except (_Refused, UserError) as exc:
            tried.append(f"batch {n + 1}: {str(exc).splitlines()[0][:200]}")
            return False
        return True

    tried: list[str] = []
    for n, rows in enumerate(spec["windows"]):
        if not attempt(n, rows, tried):
            continue
        if not times:
            return {"ok": False, "error": "the method trained no step", "tried": tried}
        # The training phase's peak (reset as it began), read before the typical batch and
        # the evaluations, which hold no more.
        peak = (torch.cuda.max_memory_allocated() if on_gpu else _peak_rss() - baseline)
        per_step, warmup = steady(times)
        steps = list(times)
        # The typical batch: the second point of the ETA's seconds-against-tokens line.
        typical = None
        for m, rows_m in enumerate(spec.get("typical") or []):
            if attempt(m, rows_m, []) and times:
                typical = {"window": m, "seconds": steady(times)[0], "steps": list(times)}
                break
        return {"ok": True, "peak_bytes": int(peak), "baseline_bytes": int(baseline),
                "seconds_per_step": per_step, "warmup_seconds": warmup, "steps": steps,
                "typical": typical,
                "device": "cuda" if on_gpu else "cpu", "window": n, "rows": len(rows),
                "tried": tried,
                "trained_rows": _trained_rows(method_cls(stage.method.config), spec, stage,
                                              model, tokenizer, provider, pipeline.seed),
                "evaluations": _time_evaluations(pipeline, spec.get("evaluations") or [],
                                                 model, tokenizer)}
    return {"ok": False, "error": "the method left rows out of every batch tried ("
            + "; ".join(tried[-3:]) + ")", "tried": tried}


def _trained_rows(method: Any, spec: dict[str, Any], stage: Any, model: Any, tokenizer: Any,
                  provider: Any, seed: int) -> int | None:
    """How many of the stage's rows the method's own trainer keeps, where the plan asks.

    For a method that tokenizes inside its TRL trainer (no `Method.tokenize_examples`), only
    the trainer knows which rows it drops (ORPO's prompts that fill max_length, the reward
    trainer's pairs over it): build the method's trainer on every row, as training does, and
    count its dataset. None when not asked, or when the trainer has no dataset to count.
    """
    rows = spec.get("count_rows")
    if not rows:
        return None
    from ftp.contexts import TrainContext

    ctx = TrainContext(stage=stage.name, model=model, tokenizer=tokenizer, provider=provider,
                       train=rows, eval=None, adapter=stage.adapter,
                       output_dir=Path(spec["output_dir"]) / "count", seed=seed,
                       log=lambda record: None, on_bad_rows="skip")
    try:
        trainer = method.trainer(ctx)
    except UserError:
        return 0
    dataset = getattr(trainer, "train_dataset", None)
    return len(dataset) if dataset is not None else None


def _time_evaluations(pipeline: Any, specs: list[dict[str, Any]], model: Any,
                      tokenizer: Any) -> list[dict[str, Any]]:
    """Time each evaluation on its sample (after the training steps: the peak is theirs).

    An evaluator with a list of ``prompts`` (``generate``) answers its first prompt only, and
    is scaled by their number; a data evaluator gets the sample of rows the spec holds,
    scaled by the spec's ``scale``.
    """
    from ftp.contexts import EvalContext

    out = []
    for spec in specs:
        ev = next(e for e in pipeline.evaluations if e.name == spec["name"])
        config = ev.evaluator.config
        scale = float(spec.get("scale", 1.0))
        prompts = getattr(config, "prompts", None)
        if isinstance(prompts, list) and len(prompts) > 1:
            config = config.model_copy(update={"prompts": prompts[:1]})
            scale = float(len(prompts))
        evaluator = ev.evaluator.cls(config)
        started = time.perf_counter()
        try:
            evaluator.evaluate(EvalContext(stage="base", model=model, tokenizer=tokenizer,
                                           data=spec.get("rows"), seed=pipeline.seed,
                                           base_dir=pipeline.base_dir))
        except Exception as exc:  # the estimate is left unknown; the run would tell
            out.append({"name": ev.name, "error": f"{type(exc).__name__}: {exc}"[:200]})
            continue
        seconds = time.perf_counter() - started
        out.append({"name": ev.name, "runs": int(spec["runs"]), "sample_seconds": seconds,
                    "scale": scale, "seconds": seconds * scale * int(spec["runs"])})
    return out


def main(argv: list[str]) -> int:
    """Child entry: read the spec, probe, write the result file."""
    import contextlib
    import io
    import warnings

    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    warnings.filterwarnings("ignore")  # library chatter; the caller reports the result

    try:
        # The trainer's own printing is not the caller's output.
        with contextlib.redirect_stdout(io.StringIO()):
            result = _probe(spec)
    except (UserError, RunError) as exc:
        result = {"ok": False, "error": str(exc).splitlines()[0]}
    except Exception as exc:  # the probe reports; the caller decides
        text = str(exc).strip().splitlines()
        result = {"ok": False, "error": f"{type(exc).__name__}: {text[0] if text else ''}"}
    Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
