"""Training progress for people, and every logged step into metrics.jsonl.

On a terminal: one live line per stage (bar, step/total, elapsed, ETA from the stage's max
steps, loss, tokens/s) that redraws in place. Elsewhere (a log file, a CI job, a pipe): plain
lines, one at most every `line_every` seconds plus the first and the last step, so a log
holds a readable history instead of hundreds of carriage returns. Evaluation losses are always
printed as a line. Built lazily: ``transformers`` is imported only when a stage starts training.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from ftp.training_guard import nonfinite_text

#: Seconds between plain progress lines when the output is not a terminal.
LINE_EVERY_S = 30.0
#: Overrides `LINE_EVERY_S` (seconds; 0 prints a line at every logged step).
LINE_EVERY_ENV = "FTP_PROGRESS_EVERY"


def line_every() -> float:
    """Seconds between plain progress lines: ``FTP_PROGRESS_EVERY``, else `LINE_EVERY_S`."""
    try:
        return max(0.0, float(os.environ.get(LINE_EVERY_ENV, LINE_EVERY_S)))
    except ValueError:
        return LINE_EVERY_S


def clock(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Clock:
    """Elapsed time, and the time left estimated from the steps done since the stage began.

    A resumed stage starts at its checkpoint's step: only the steps done in this process count
    for the pace.
    """

    def __init__(self, first_step: int = 0) -> None:
        self.started = time.perf_counter()
        self.first_step = first_step

    def elapsed(self) -> float:
        """Seconds since the stage began training."""
        return time.perf_counter() - self.started

    def eta(self, step: int, max_steps: int) -> float | None:
        """Seconds left at the pace so far; None before the first step."""
        done = step - self.first_step
        if done <= 0 or not max_steps:
            return None
        return self.elapsed() / done * max(max_steps - step, 0)


def make_progress_callback(
    console: Console, stage: str, log: Callable[[dict[str, Any]], None]
) -> Any:
    """Return a ``TrainerCallback`` showing progress of ``stage`` and recording its metrics.

    Args:
        console: Where to draw; a terminal gets the live line, anything else plain lines.
        stage: The stage's name, shown and recorded with every metric.
        log: Receives each logged metrics dict (for metrics.jsonl).

    """
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def __init__(self) -> None:
            self.live: Progress | None = None
            self.task: Any = None
            self.clock = Clock()
            self.loss: float | None = None
            self.last_line = -math.inf
            self.every = line_every()
            self.state: Any = None

        def _rate(self, state: Any) -> float:
            elapsed = self.clock.elapsed()
            seen = getattr(state, "num_input_tokens_seen", 0) or 0
            return seen / elapsed if elapsed > 0 else 0.0

        def _fields(self, state: Any) -> dict[str, Any]:
            eta = self.clock.eta(state.global_step, state.max_steps)
            # Some trainers count no tokens (TRL's ORPO): "-", never a rate of 0 tok/s.
            counted = bool(getattr(state, "num_input_tokens_seen", 0))
            return {"elapsed": clock(self.clock.elapsed()), "eta": clock(eta),
                    "loss": "-" if self.loss is None else f"{self.loss:.4f}",
                    "tps": f"{self._rate(state):.0f}" if counted else "-"}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.clock = Clock(state.global_step)
            if not console.is_terminal:
                return
            self.live = Progress(
                TextColumn(f"[bold]{stage}[/]"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("{task.fields[elapsed]} elapsed, ETA {task.fields[eta]}"),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[tps]} tok/s"),
                console=console,
                transient=True,
            )
            self.live.start()
            self.task = self.live.add_task(stage, total=state.max_steps or None,
                                           completed=state.global_step,
                                           **self._fields(state))

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.state = state
            if self.live is not None:
                self.live.update(self.task, completed=state.global_step, **self._fields(state))

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            logs = dict(logs or {})
            record: dict[str, Any] = {"stage": stage, "step": state.global_step}
            # A non-finite value is recorded as "nan"/"inf", never dropped or written as 0.
            record.update({k: _recordable(v) for k, v in logs.items() if _loggable(v)})
            record["tokens_seen"] = getattr(state, "num_input_tokens_seen", 0)
            record["tokens_per_second"] = round(self._rate(state), 1)
            log(record)
            if isinstance(logs.get("loss"), int | float):
                self.loss = float(logs["loss"])
            fields = self._fields(state)
            if self.live is not None:
                self.live.update(self.task, **fields)
            if "eval_loss" in logs:
                console.print(f"  {stage} step {state.global_step}/{state.max_steps}  "
                              f"eval_loss {_fmt(logs['eval_loss'])}", highlight=False)
            if self.live is None and "loss" in logs:
                now = time.perf_counter()
                last = state.global_step >= state.max_steps
                if now - self.last_line >= self.every or last:
                    self.last_line = now
                    self._line(state, logs, fields)

        def _line(self, state: Any, logs: dict[str, Any], fields: dict[str, Any]) -> None:
            """One plain progress line, for logs."""
            extra = "".join(f"  {k} {_fmt(logs[k])}" for k in ("learning_rate", "grad_norm")
                            if k in logs)
            console.print(f"  {stage} step {state.global_step}/{state.max_steps}  "
                          f"{fields['elapsed']} elapsed, ETA {fields['eta']}  loss "
                          f"{fields['loss']}{extra}{_rate_text(fields)}", highlight=False,
                          soft_wrap=True)  # one line per step in a log, however narrow

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.live is not None:
                self.live.stop()
                self.live = None
                if self.state is not None:  # the live line is gone: leave its last values
                    fields = self._fields(self.state)
                    console.print(f"  {stage} step {self.state.global_step}/"
                                  f"{self.state.max_steps} in {fields['elapsed']}  loss "
                                  f"{fields['loss']}{_rate_text(fields)}", highlight=False,
                                  soft_wrap=True)

    return _Progress()


def _rate_text(fields: dict[str, Any]) -> str:
    """The tokens/s part of a plain progress line; empty where the trainer counts no tokens."""
    return "" if fields["tps"] == "-" else f"  {fields['tps']} tok/s"


def _loggable(v: Any) -> bool:
    return isinstance(v, bool | int | float | str)


def _recordable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return nonfinite_text(v)
    return v


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 else f"{v:.4f}"
    return str(v)
