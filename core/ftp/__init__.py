"""ftp: finetune language models from one pipeline.toml, with plugins for every part.

The public API for plugin authors is what this module exports: the ``hookimpl`` marker, the
component base classes, the contexts they receive, the errors they may raise, the builder
of trainer-backed methods (`TrainerMethod`, `TrainingOptions`: ``ftp.training``), and the
masking of secrets in what a plugin writes or sends (`mask_secrets`, `mask_text`:
``ftp.masking``), and what a plugin's command uses to report errors and quiet libraries
(`reports_errors`, `quiet_libraries`: ``ftp.commandline``).
"""

from ftp.commandline import quiet_libraries, reports_errors
from ftp.components import (
    IGNORE_INDEX,
    Component,
    DataLoader,
    Evaluator,
    Format,
    Launcher,
    Method,
    ModelProvider,
    Reward,
    RewardRef,
    Shape,
    StrictConfig,
    TokenizedExample,
    TokenSequence,
)
from ftp.contexts import EvalContext, LoadContext, TrainContext
from ftp.errors import ConfigError, FtpError, RanksStopped, RunError, UserError
from ftp.hookspecs import hookimpl
from ftp.masking import mask_secrets, mask_text
from ftp.training import TrainerMethod, TrainingOptions

__version__ = "0.1.0"

__all__ = [
    "IGNORE_INDEX",
    "Component",
    "ConfigError",
    "DataLoader",
    "EvalContext",
    "Evaluator",
    "Format",
    "FtpError",
    "Launcher",
    "LoadContext",
    "Method",
    "ModelProvider",
    "Reward",
    "RanksStopped",
    "RewardRef",
    "RunError",
    "Shape",
    "StrictConfig",
    "TokenSequence",
    "TokenizedExample",
    "TrainContext",
    "TrainerMethod",
    "TrainingOptions",
    "UserError",
    "hookimpl",
    "mask_secrets",
    "mask_text",
    "quiet_libraries",
    "reports_errors",
]
