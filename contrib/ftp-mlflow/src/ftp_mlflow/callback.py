"""The trainer callback that logs every training log line (loss, learning rate, ...) to MLflow.

Imported only when a stage is about to train, so that loading the plugin does not import
transformers.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from ftp_mlflow.names import numeric_metrics
from ftp_mlflow.tracker import Tracker


class MlflowStepCallback(TrainerCallback):
    """Logs the trainer's numbers as ``STAGE/train/KEY`` at the trainer's global step.

    Args:
        tracker: The run to log to.
        stage: The stage's name.

    """

    def __init__(self, tracker: Tracker, stage: str) -> None:
        self.tracker = tracker
        self.stage = stage

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        """Log one log line; only the main process logs when training is distributed."""
        if not logs or not state.is_world_process_zero:
            return
        metrics = numeric_metrics(logs, f"{self.stage}/train")
        if metrics:
            # Tracker methods catch store errors themselves: a callback that raised would
            # stop the training it observes.
            self.tracker.log_metrics(metrics, step=state.global_step)
