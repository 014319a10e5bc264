"""Every hook a plugin can implement, in one place.

A plugin is a module (or object) with functions decorated by ``ftp.hookimpl`` and named after
the specs below. Built-in plugins use exactly these hooks. Hook names are the plugin author's
API: they change only with a deprecation.

Registration hooks return component classes; ftp calls each plugin's implementation on its
own, so that a failing plugin is reported alone and every name knows who provided it.

Lifecycle hooks are called, in every plugin that implements them, as a pipeline runs. Their
return values are ignored except where said.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy

PROJECT = "ftp"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- Registration: components ----------------------------------------------------------------


@hookspec
def ftp_data_loaders() -> list[type]:
    """Return `ftp.DataLoader` subclasses: readers of records (``loader =`` in ``[data.*]``)."""


@hookspec
def ftp_formats() -> list[type]:
    """Return `ftp.Format` subclasses: record → shape converters (``format =`` in ``[data.*]``)."""


@hookspec
def ftp_model_providers() -> list[type]:
    """Return `ftp.ModelProvider` subclasses (``provider =`` in ``[model]``)."""


@hookspec
def ftp_methods() -> list[type]:
    """Return `ftp.Method` subclasses: training methods (``method =`` in ``[[stages]]``)."""


@hookspec
def ftp_evaluators() -> list[type]:
    """Return `ftp.Evaluator` subclasses (``evaluator =`` in ``[[evaluate]]``)."""


# --- Registration: command line --------------------------------------------------------------


@hookspec
def ftp_cli_commands() -> list[Any]:
    """Return ``click.Command`` objects to add to the ``ftp`` command line."""


# --- Lifecycle -------------------------------------------------------------------------------


@hookspec
def ftp_pipeline_start(pipeline: Any, run_dir: Path) -> None:
    """Called once the pipeline is validated and its run directory exists.

    Args:
        pipeline: The validated ``ftp.config.Pipeline``.
        run_dir: The run directory.

    """


@hookspec
def ftp_dataset_ready(name: str, train: list[dict], eval: list[dict] | None) -> None:
    """Called when a dataset is loaded, formatted and split.

    Args:
        name: The dataset's name in the pipeline file.
        train: Formatted training records.
        eval: Formatted held-out records, or None.

    """


@hookspec
def ftp_model_loaded(model: Any, tokenizer: Any, stage: str) -> None:
    """Called after a model is loaded for a stage (``stage`` is the stage's name)."""


@hookspec
def ftp_trainer_callbacks(stage: str) -> list[Any]:
    """Return ``transformers.TrainerCallback`` objects to add to a stage's trainer."""


@hookspec
def ftp_evaluation_done(stage: str, evaluator: str, results: dict) -> None:
    """Called with each evaluator's results (``stage`` is ``"base"`` before training)."""


@hookspec
def ftp_pipeline_finish(run_dir: Path, results: dict) -> None:
    """Called when the whole pipeline finished and every output is written."""


@hookspec
def ftp_pipeline_error(error: BaseException, step: str, run_dir: Path | None) -> None:
    """Called when the pipeline fails, with the step that failed (e.g. ``stage sft: train``)."""
