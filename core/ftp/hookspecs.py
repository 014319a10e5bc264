"""Every hook a plugin can implement, in one place.

A plugin is a module (or object) with functions decorated by ``ftp.hookimpl`` and named after
the specs below. Built-in plugins use exactly these hooks. Hook names are the plugin author's
API: they change only with a deprecation.

Registration hooks return component classes (the kinds are listed in `ftp.kinds`); pluggy
calls each plugin's implementation on its own, so that a failing plugin is reported alone and
every name knows who provided it.

Lifecycle hooks are called by pluggy, in every plugin that implements them, as a pipeline
runs, in the order docs/hooks.md gives. Their return values are ignored except where said. An
exception in one is reported (plugin and hook named) and the run goes on; ``--strict-plugins``
makes it fatal. Wrappers (``@hookimpl(wrapper=True)``, or the older ``hookwrapper=True``) work
as pluggy documents them: the code before ``yield`` runs before every other implementation,
the code after it once they all returned. docs/hooks.md has an entry, with an example, for
every hook here (a test checks).

The annotations are for readers and type checkers; the types are imported only while type
checking, so that this module stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

    from ftp.components import (
        DataLoader,
        Evaluator,
        Format,
        Launcher,
        Method,
        ModelProvider,
        Reward,
        StrictConfig,
    )
    from ftp.config import Pipeline

PROJECT = "ftp"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- Registration: components ----------------------------------------------------------------


@hookspec
def ftp_data_loaders() -> list[type[DataLoader]]:
    """Return `ftp.DataLoader` subclasses: readers of records (``loader =`` in ``[data.*]``).

    Called once per plugin as it is registered, at the start of every ``ftp`` command.
    """


@hookspec
def ftp_formats() -> list[type[Format]]:
    """Return `ftp.Format` subclasses: record → shape converters (``format =`` in ``[data.*]``).

    Called once per plugin as it is registered, at the start of every ``ftp`` command.
    """


@hookspec
def ftp_model_providers() -> list[type[ModelProvider]]:
    """Return `ftp.ModelProvider` subclasses (``provider =`` in ``[model]``).

    Called once per plugin as it is registered, at the start of every ``ftp`` command.
    """


@hookspec
def ftp_methods() -> list[type[Method]]:
    """Return `ftp.Method` subclasses: training methods (``method =`` in ``[[stages]]``).

    Called once per plugin as it is registered, at the start of every ``ftp`` command.
    """


@hookspec
def ftp_evaluators() -> list[type[Evaluator]]:
    """Return `ftp.Evaluator` subclasses (``evaluator =`` in ``[[evaluate]]``).

    Called once per plugin as it is registered, at the start of every ``ftp`` command.
    """


@hookspec
def ftp_rewards() -> list[type[Reward]]:
    """Return `ftp.Reward` subclasses: completion scorers (``reward =`` in a ``rewards`` list).

    Called once per plugin as it is registered, at the start of every ``ftp`` command.
    """


@hookspec
def ftp_launchers() -> list[type[Launcher]]:
    """Return `ftp.Launcher` subclasses: what starts a distributed run's processes.

    Named by ``[distributed] launcher``; the built-in is ``torchrun``. Called once per plugin
    as it is registered, at the start of every ``ftp`` command.
    """


# --- Registration: settings ------------------------------------------------------------------


@hookspec
def ftp_plugin_settings() -> type[StrictConfig] | None:
    """Return an `ftp.StrictConfig` subclass: the plugin's settings (``[plugins.NAME]``).

    NAME is the plugin's name as ``ftp plugins`` shows it. Every field needs a default: a
    pipeline without the table gets the defaults. The validated settings reach lifecycle hooks
    as ``pipeline.plugin_settings[NAME]``. Return None to declare none.

    Called once per plugin as it is registered, at the start of every ``ftp`` command.
    """


# --- Registration: command line --------------------------------------------------------------


@hookspec
def ftp_cli_commands() -> list[click.Command]:
    """Return ``click.Command`` objects to add to the ``ftp`` command line.

    Called when ``ftp`` looks up a command it does not know itself, or lists commands for
    ``--help``. A name already taken by a built-in command is ignored.
    """


# --- Lifecycle -------------------------------------------------------------------------------


@hookspec
def ftp_pipeline_start(pipeline: Pipeline, run_dir: Path) -> None:
    """Called once the pipeline is validated and its run directory exists.

    Args:
        pipeline: The validated ``ftp.config.Pipeline``.
        run_dir: The run directory.

    """


@hookspec
def ftp_dataset_ready(name: str, train: Sequence[dict[str, Any]],
                      eval: Sequence[dict[str, Any]] | None) -> None:
    """Called for each dataset a stage or evaluation uses, once loaded, formatted and split.

    Args:
        name: The dataset's name in the pipeline file.
        train: Formatted training records.
        eval: Formatted held-out records, or None.

    The sequences are the ones training and evaluation use, read like lists (held packed:
    `ftp.packedrows.PackedRows`, each read a fresh copy); treat them as read-only.

    """


@hookspec
def ftp_model_loaded(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                     stage: str) -> None:
    """Called after the model is loaded, and again after each stage trained it.

    Args:
        model: The model (for ``hf``, a transformers model), adapters already merged.
        tokenizer: Its tokenizer.
        stage: ``"base"`` for the model as loaded, else the stage that just trained it.

    """


@hookspec
def ftp_trainer_callbacks(stage: str) -> list[TrainerCallback]:
    """Return ``transformers.TrainerCallback`` objects to add to a stage's trainer.

    Called before each stage trains, after its adapter is added; the callbacks reach the
    method as ``TrainContext.callbacks``.

    Args:
        stage: The name of the stage about to train.

    """


@hookspec
def ftp_evaluation_done(stage: str, evaluator: str, results: dict[str, Any]) -> None:
    """Called after each evaluation, once its results are written to results.json.

    Args:
        stage: ``"base"`` before training, else the stage just finished.
        evaluator: The evaluation's name.
        results: What the evaluator returned, e.g. ``{"metrics": {...}, "samples": [...]}``.

    """


@hookspec
def ftp_pipeline_finish(run_dir: Path, results: dict[str, Any]) -> None:
    """Called when the pipeline finished: model/, results.json and summary.md are written.

    Args:
        run_dir: The run directory (a plugin may add files of its own).
        results: The contents of results.json.

    """


@hookspec
def ftp_pipeline_error(error: BaseException, step: str, run_dir: Path | None) -> None:
    """Called when a started run fails, once run.json (failed), results and summary are written.

    Also called when SIGTERM or SIGINT stops the run (run.json ``interrupted``), so that a
    tracker closes its run; ``error`` is then an ``ftp.signals.Interrupted``.

    Args:
        error: The exception that stopped the run.
        step: The step that was running, e.g. ``"stage 'sft': train (sft)"``.
        run_dir: The run directory.

    Exceptions raised here are ignored; the original error is reported.

    """
