"""ftp-template: an ftp plugin with one component of each kind, a lifecycle hook and a command.

ftp loads this module through the ``ftp.plugins`` entry point named ``template`` (see
pyproject.toml) and calls the hook implementations below. Each hook returns classes; ftp
calls each plugin's hooks on their own, so a mistake here is reported against this plugin
alone (``ftp plugins`` shows it) instead of breaking ftp.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftp import hookimpl
from ftp_template.commands import command
from ftp_template.evaluator import ExactMatch
from ftp_template.format import QAFormat
from ftp_template.loader import SQLiteLoader
from ftp_template.method import NormTune
from ftp_template.provider import PartlyFrozenHF
from ftp_template.report import write_metrics_csv
from ftp_template.reward import KeywordReward

__version__ = "0.1.0"

__all__ = ["ExactMatch", "KeywordReward", "NormTune", "PartlyFrozenHF", "QAFormat",
           "SQLiteLoader"]


@hookimpl
def ftp_data_loaders() -> list[type]:
    """Register the SQLite loader."""
    return [SQLiteLoader]


@hookimpl
def ftp_formats() -> list[type]:
    """Register the question-answering format."""
    return [QAFormat]


@hookimpl
def ftp_model_providers() -> list[type]:
    """Register the partly frozen hf provider."""
    return [PartlyFrozenHF]


@hookimpl
def ftp_methods() -> list[type]:
    """Register the norm-tuning method."""
    return [NormTune]


@hookimpl
def ftp_evaluators() -> list[type]:
    """Register the exact-match evaluator."""
    return [ExactMatch]


@hookimpl
def ftp_rewards() -> list[type]:
    """Register the keyword reward (for GRPO's ``rewards``)."""
    return [KeywordReward]


@hookimpl
def ftp_cli_commands() -> list[Any]:
    """Add ``ftp template ...`` to the command line."""
    return [command]


@hookimpl
def ftp_pipeline_finish(run_dir: Path, results: dict) -> None:
    """Write every evaluation metric of the run to ``metrics.csv``, for spreadsheets."""
    write_metrics_csv(run_dir / "metrics.csv", results)
