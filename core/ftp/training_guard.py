"""The callback ftp adds to every stage's trainer: checkpoints, signals, non-finite steps.

- **Checkpoints** on the stage's schedule (steps or time) and whenever a signal asked for a
  stop: the Trainer writes its own checkpoint (weights, optimizer, scheduler, RNG, data
  position), and `ftp.checkpoints.finalize` adds the manifest and gives it its final name.
- **Signals**: after that checkpoint, `Interrupted` ends the stage (see `ftp.signals`).
- **Non-finite steps**: before each optimizer step the gradients are checked; a NaN or inf
  (which a NaN loss always gives) stops the run before the optimizer applies it, so the
  weights stay those of the last good step. A bounded number of such steps may be skipped
  instead (`Policy.skip_nonfinite`): the optimizer step is left out, the schedule goes on.

Built lazily: ``transformers`` is imported only when a stage starts training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftp import checkpoints
from ftp.checkpoints import Policy
from ftp.distributed import ranks
from ftp.errors import RunError
from ftp.signals import STOP, Interrupted


class NonFiniteError(RunError):
    """Training met a NaN or inf loss or gradient; resuming as is would meet it again."""


def make_guard_callback(stage: str, folder: Path, policy: Policy, parts: dict[str, str],
                        resume_step: int, log: Callable[[dict[str, Any]], None],
                        say: Callable[[str], None]) -> Any:
    """Return the ``TrainerCallback`` that checkpoints and guards ``stage``.

    Args:
        stage: The stage's name.
        folder: The stage's ``checkpoints`` folder (the Trainer's ``output_dir``).
        policy: When to checkpoint, how many to keep, how many bad steps to skip.
        parts: `ftp.checkpoints.identity` of the pipeline up to this stage, for manifests.
        resume_step: The step the stage resumes at (0: from the start); the callback checks
            that the method really resumed there.
        log: Records a metrics dict in metrics.jsonl.
        say: Prints one line for the user.

    """
    from transformers import TrainerCallback

    class Guard(TrainerCallback):
        def __init__(self) -> None:
            self.last_save = time.monotonic()
            self.skipped = 0
            self.last_good: Path | None = None
            self.trainer: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if resume_step and state.global_step != resume_step:
                raise RunError(f"the method did not resume from the checkpoint at step "
                               f"{resume_step} (it started at step {state.global_step}); it "
                               "must pass TrainContext.resume_from to trainer.train()")
            self.last_save = time.monotonic()
            STOP.training = True
            if STOP.signum is not None:  # a signal came while the trainer was being built
                raise Interrupted(STOP.signum, self._newest())

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any,
                                  model: Any = None, **kw: Any) -> None:
            bad = _nonfinite_gradients(model)
            if bad is None:
                return
            step = state.global_step + 1
            what = self._loss_or(bad)
            log({"stage": stage, "step": step, "event": "non-finite", **what})
            key, value = next(iter(what.items()))
            name = "the loss" if key == "loss" else "the gradient norm"
            if self.skipped < policy.skip_nonfinite:
                self.skipped += 1
                say(f"  {stage} step {step}: {name} is {value}; step skipped "
                    f"({self.skipped} of {policy.skip_nonfinite} allowed)")
                for p in model.parameters():
                    p.grad = None  # the optimizer leaves parameters without a gradient alone
                return
            last = self._newest()
            kept = f"last good checkpoint: {last}" if last else "no checkpoint was written yet"
            raise NonFiniteError(f"stage {stage!r}, step {step}: {name} is {value}; stopped before "
                           f"the optimizer applied it ({kept}). Lower the learning rate, or "
                           "set skip_nonfinite_steps to skip a few such steps")

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            due = STOP.signum is not None
            if state.global_step < state.max_steps:
                if policy.steps and state.global_step % policy.steps == 0:
                    due = True
                # The clock is the main process's, a signal each process's own: one
                # collective below makes every process save at the same step.
                if policy.seconds and ranks.here().is_main \
                        and time.monotonic() - self.last_save >= policy.seconds:
                    due = True
            due = ranks.agree(due)  # free in one process
            if due:
                control.should_save = True

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.last_save = time.monotonic()
            final = folder / f"{checkpoints.FINAL_PREFIX}{state.global_step}"
            # Each process writes its own RNG state into the checkpoint: all of them must be
            # done before the main process hashes and renames it.
            ranks.barrier(f"the checkpoint at step {state.global_step}")
            if args.should_save:  # the main process writes; under DDP the others only wait
                final = checkpoints.finalize(folder, state.global_step, stage, parts)
                checkpoints.prune(folder, policy.keep)
                log({"stage": stage, "step": state.global_step, "event": "checkpoint",
                     "path": str(final)})
            if STOP.signum is not None:
                raise Interrupted(STOP.signum, str(final.absolute()))

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            STOP.training = False

        def _newest(self) -> str | None:
            found = checkpoints.complete(folder)
            return str(found[-1].absolute()) if found else None

        def _loss_or(self, grad: str) -> dict[str, str]:
            """The step's loss when the trainer shows it non-finite, else the gradient norm."""
            loss = getattr(self.trainer, "_tr_loss", None)
            if loss is not None:
                value = float(loss)
                if not math.isfinite(value):
                    return {"loss": nonfinite_text(value)}
            return {"grad_norm": grad}

    return Guard()


def bind_trainer(trainer: Any) -> None:
    """Let ftp's guard read the trainer's running loss, to name a non-finite one."""
    for cb in getattr(trainer.callback_handler, "callbacks", []):
        if type(cb).__name__ == "Guard" and hasattr(cb, "trainer"):
            cb.trainer = trainer


def unbind_trainer(trainer: Any) -> None:
    """Undo `bind_trainer`: the guard outlives the trainer, and must not keep it alive."""
    for cb in getattr(trainer.callback_handler, "callbacks", []):
        if type(cb).__name__ == "Guard" and hasattr(cb, "trainer"):
            cb.trainer = None


def _nonfinite_gradients(model: Any) -> str | None:
    """``"nan"``/``"inf"`` when a gradient holds one, else None (one reduction, one sync)."""
    import torch

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return None
    norms = torch._foreach_norm(grads)
    total = torch.stack([n.float() for n in norms]).sum()
    if torch.isfinite(total):
        return None
    return "nan" if torch.isnan(total) else "inf"


def nonfinite_text(value: float) -> str:
    """How metrics.jsonl records a non-finite number: ``"nan"``, ``"inf"`` or ``"-inf"``."""
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"
