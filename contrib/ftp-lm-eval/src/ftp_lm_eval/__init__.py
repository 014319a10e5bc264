"""ftp-lm-eval: an ftp plugin running EleutherAI's lm-evaluation-harness as an evaluator.

ftp loads this module through the ``ftp.plugins`` entry point named ``lm-eval`` (see
pyproject.toml). It registers the ``lm_eval`` evaluator, and implements one lifecycle hook to
learn the pipeline file's folder, against which relative task folders are resolved. Nothing
heavy is imported here: lm_eval, torch and transformers load only when an evaluation runs.
"""

from typing import Any

from ftp import hookimpl
from ftp_lm_eval.evaluator import LmEval, flatten_metrics, set_pipeline_dir
from ftp_lm_eval.tasks import BUNDLED_TASKS

__version__ = "0.1.0"

__all__ = ["BUNDLED_TASKS", "LmEval", "flatten_metrics", "ftp_evaluators",
           "ftp_pipeline_start", "set_pipeline_dir"]


@hookimpl
def ftp_evaluators() -> list[type]:
    """Register the ``lm_eval`` evaluator."""
    return [LmEval]


@hookimpl
def ftp_pipeline_start(pipeline: Any) -> None:
    """Remember the pipeline file's folder for resolving relative ``task_dirs``."""
    set_pipeline_dir(pipeline.base_dir)
