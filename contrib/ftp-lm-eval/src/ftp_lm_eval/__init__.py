"""ftp-lm-eval: an ftp plugin running EleutherAI's lm-evaluation-harness as an evaluator.

ftp loads this module through the ``ftp.plugins`` entry point named ``lm-eval`` (see
pyproject.toml). It registers the ``lm_eval`` evaluator. Nothing heavy is imported here:
lm_eval, torch and transformers load only when an evaluation runs.
"""

from ftp import hookimpl
from ftp_lm_eval.evaluator import LmEval, flatten_metrics
from ftp_lm_eval.tasks import BUNDLED_TASKS

__version__ = "0.1.0"

__all__ = ["BUNDLED_TASKS", "LmEval", "flatten_metrics", "ftp_evaluators"]


@hookimpl
def ftp_evaluators() -> list[type]:
    """Register the ``lm_eval`` evaluator."""
    return [LmEval]
