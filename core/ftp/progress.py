"""Training progress on the terminal and in metrics.jsonl, as a ``transformers`` callback.

Built lazily: ``transformers`` is imported only when a stage starts training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ftp.training_guard import nonfinite_text


def make_progress_callback(
    console: Console, stage: str, log: Callable[[dict[str, Any]], None]
) -> Any:
    """Return a ``TrainerCallback`` showing step/total, loss, tokens/s and ETA for ``stage``.

    Args:
        console: Where to draw.
        stage: The stage's name, shown and recorded with every metric.
        log: Receives each logged metrics dict (for metrics.jsonl).

    """
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def __init__(self) -> None:
            self.progress: Progress | None = None
            self.task: Any = None
            self.started = 0.0
            self.tokens = 0
            self.loss: float | None = None

        def _rate(self, state: Any) -> float:
            elapsed = time.perf_counter() - self.started
            seen = getattr(state, "num_input_tokens_seen", 0) or 0
            return seen / elapsed if elapsed > 0 else 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.started = time.perf_counter()
            self.progress = Progress(
                TextColumn(f"[bold]{stage}[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[tps]} tok/s"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(stage, total=state.max_steps, loss="-", tps="-")

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.progress is not None:
                self.progress.update(
                    self.task, completed=state.global_step, tps=f"{self._rate(state):.0f}"
                )

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            logs = dict(logs or {})
            record: dict[str, Any] = {"stage": stage, "step": state.global_step}
            # A non-finite value is recorded as "nan"/"inf", never dropped or written as 0.
            record.update({k: _recordable(v) for k, v in logs.items() if _loggable(v)})
            record["tokens_seen"] = getattr(state, "num_input_tokens_seen", 0)
            record["tokens_per_second"] = round(self._rate(state), 1)
            log(record)
            if "loss" in logs and self.progress is not None:
                self.loss = float(logs["loss"])
                self.progress.update(self.task, loss=f"{self.loss:.3f}")
            shown = {k: v for k, v in logs.items() if k in ("loss", "eval_loss", "learning_rate")}
            if shown:
                parts = [f"{k} {_fmt(v)}" for k, v in shown.items()]
                console.print(
                    f"  {stage} step {state.global_step}/{state.max_steps}  " + "  ".join(parts)
                    + f"  {record['tokens_per_second']:.0f} tok/s",
                    highlight=False,
                )

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

    return _Progress()


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
