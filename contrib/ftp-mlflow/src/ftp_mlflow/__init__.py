"""ftp-mlflow: tracks ftp runs in MLflow through ftp's lifecycle hooks.

One ftp run becomes one MLflow run, in the experiment named after the pipeline:

- params: the resolved pipeline (``resolved.json``) flattened, e.g. ``stages.sft.learning_rate``,
  and each dataset's row counts (``rows.NAME.train``);
- metrics: every training log line as ``STAGE/train/KEY`` at the trainer's step, and every
  evaluation as ``STAGE/EVALUATION/METRIC`` and ``eval/EVALUATION/METRIC`` (step 0 = before
  training, step N = after the Nth stage);
- artifacts: ``pipeline.toml``, ``resolved.json``, ``results.json``, ``summary.md`` and the
  other records of the run directory, and optionally the final model;
- status FINISHED, or FAILED (KILLED when interrupted) with the failed step as a tag.

Tracking is opt-in (``[plugins.mlflow] enabled = true`` in the pipeline file, ``FTP_MLFLOW=1``,
or a tracking URI); the options come from the ``[plugins.mlflow]`` table and environment
variables, which win: see ``ftp_mlflow.settings`` and the README. The module is
cheap to import: MLflow and transformers are imported when a run starts.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ftp import hookimpl

__version__ = "0.1.0"

__all__ = [
    "ftp_dataset_ready",
    "ftp_evaluation_done",
    "ftp_pipeline_error",
    "ftp_pipeline_finish",
    "ftp_pipeline_start",
    "ftp_plugin_settings",
    "ftp_trainer_callbacks",
]

BASE_STAGE = "base"
# The run directory's records, uploaded at the end (whichever exist by then).
RECORDS = ("pipeline.toml", "resolved.json", "environment.json", "data.json", "metrics.jsonl",
           "results.json", "summary.md")


@dataclass
class _State:
    """The pipeline being tracked in this process (ftp runs one pipeline at a time)."""

    tracker: Any = None  # an ftp_mlflow.tracker.Tracker, or None when not tracking
    stage_steps: dict[str, int] = field(default_factory=dict)  # stage name -> eval step


_state = _State()


@hookimpl
def ftp_plugin_settings() -> type:
    """Declare the ``[plugins.mlflow]`` table: ftp validates it with the pipeline file."""
    from ftp_mlflow.settings import MlflowSettings

    return MlflowSettings


@hookimpl
def ftp_pipeline_start(pipeline: Any, run_dir: Path) -> None:
    """Start the MLflow run and log the resolved config as params."""
    from ftp import mask_text
    from ftp_mlflow.names import config_params
    from ftp_mlflow.settings import MlflowSettings, read_settings, tracking_enabled
    from ftp_mlflow.tracker import Tracker, warn

    _state.tracker = None
    # Found by type, not by name: the plugin is "mlflow" when installed, but a copy loaded
    # with -p takes its file's name.
    table = next((s for s in getattr(pipeline, "plugin_settings", {}).values()
                  if isinstance(s, MlflowSettings)), None)
    if not tracking_enabled(table=table):
        return
    # Options are checked first: a wrong value is the user's to fix, and it fails here, loudly,
    # before any training (unless ftp's hook fault handling lets the run go on untracked).
    settings = read_settings(pipeline.name, Path(pipeline.base_dir), Path(run_dir), table=table)
    _state.stage_steps = {BASE_STAGE: 0, **{s.name: i + 1 for i, s in enumerate(pipeline.stages)}}
    tags = {
        "mlflow.source.name": str(pipeline.source),
        "mlflow.source.type": "LOCAL",
        "ftp.pipeline": pipeline.name,
        "ftp.pipeline_file": str(Path(pipeline.source).resolve()),
        "ftp.run_dir": str(Path(run_dir).resolve()),
        "ftp.version": _version("ftp"),
    }
    description = ((pipeline.raw or {}).get("pipeline") or {}).get("description")
    if description:
        tags["mlflow.note.content"] = mask_text(str(description))
    tracker = Tracker.start(settings, tags)
    if tracker is None:
        return
    _state.tracker = tracker
    # Say where the run goes: tracking that nobody can find is no use.
    print(mask_text(f"mlflow: tracking experiment {settings.experiment!r}, run "
                    f"{tracker.run_id}, in {settings.tracking_uri}"), file=sys.stderr, flush=True)
    try:
        resolved = json.loads((Path(run_dir) / "resolved.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        warn(f"cannot read resolved.json, no params logged: {exc}")
        return
    tracker.log_params(config_params(resolved, pipeline.seed,
                                     [s.name for s in pipeline.stages],
                                     [e.name for e in pipeline.evaluations]))


@hookimpl
def ftp_dataset_ready(name: str, train: list[dict], eval: list[dict] | None) -> None:
    """Log how many rows each dataset gave for training and held out."""
    if _state.tracker is not None:
        _state.tracker.log_params({f"rows.{name}.train": str(len(train)),
                                   f"rows.{name}.eval": str(len(eval or []))})


@hookimpl
def ftp_trainer_callbacks(stage: str) -> list[Any]:
    """Give the stage's trainer a callback that logs each training log line."""
    if _state.tracker is None:
        return []
    from ftp_mlflow.callback import MlflowStepCallback

    return [MlflowStepCallback(_state.tracker, stage)]


@hookimpl
def ftp_evaluation_done(stage: str, evaluator: str, results: dict) -> None:
    """Log an evaluation's numeric metrics, under its stage and as a series over stages."""
    from ftp_mlflow.names import numeric_metrics

    if _state.tracker is None:
        return
    metrics = (results or {}).get("metrics") or {}
    step = _state.stage_steps.get(stage, 0)
    _state.tracker.log_metrics({**numeric_metrics(metrics, f"{stage}/{evaluator}"),
                                **numeric_metrics(metrics, f"eval/{evaluator}")}, step=step)


@hookimpl
def ftp_pipeline_finish(run_dir: Path) -> None:
    """Upload the run's records (and the model, if asked) and end the run FINISHED."""
    tracker, _state.tracker = _state.tracker, None
    if tracker is None:
        return
    run_dir = Path(run_dir)
    tracker.log_files(run_dir, RECORDS)
    if tracker.settings.log_model:
        tracker.log_folder(run_dir / "model", "model")
        tracker.log_folder(run_dir / "adapter", "adapter")
    tracker.end("FINISHED")


@hookimpl
def ftp_pipeline_error(error: BaseException, step: str, run_dir: Path | None) -> None:
    """Upload what the failed run wrote and end the run FAILED (KILLED when interrupted)."""
    tracker, _state.tracker = _state.tracker, None
    if tracker is None:
        return
    tracker.set_tags({"ftp.failed_step": step, "ftp.error": str(error).strip()})
    if run_dir is not None:
        tracker.log_files(Path(run_dir), RECORDS)
    tracker.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"
