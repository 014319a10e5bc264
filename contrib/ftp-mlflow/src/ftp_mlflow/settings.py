"""The plugin's options: the pipeline file's ``[plugins.mlflow]`` table and the environment.

The table is declared by `MlflowSettings` (ftp validates it with the rest of the file). Each
option can also come from an environment variable, two of them MLflow's own and the others
prefixed ``FTP_MLFLOW``. Precedence: a set environment variable, then the table, then the
default; so one machine or CI job can redirect or switch off tracking without editing files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from ftp import StrictConfig, UserError

ENABLE = "FTP_MLFLOW"
TRACKING_URI = "MLFLOW_TRACKING_URI"
EXPERIMENT_NAME = "MLFLOW_EXPERIMENT_NAME"
RUN_NAME = "FTP_MLFLOW_RUN_NAME"
LOG_MODEL = "FTP_MLFLOW_LOG_MODEL"

# Where the default store lives, relative to the pipeline file's folder.
DEFAULT_STORE_DIR = "mlruns"
DEFAULT_DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "artifacts"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class MlflowSettings(StrictConfig):
    """``[plugins.mlflow]``: where and whether runs are tracked (environment variables win)."""

    enabled: bool | None = Field(
        None, description="Track runs (FTP_MLFLOW). Unset: tracked when a tracking URI is "
        "given, here or by MLFLOW_TRACKING_URI.")
    tracking_uri: str = Field(
        "", description="MLflow tracking URI (MLFLOW_TRACKING_URI). Empty: a SQLite store, "
        "mlruns/mlflow.db beside the pipeline file.")
    experiment: str = Field(
        "", description="Experiment name (MLFLOW_EXPERIMENT_NAME). Empty: the pipeline's name.")
    run_name: str = Field(
        "", description="MLflow run name (FTP_MLFLOW_RUN_NAME). Empty: the run directory's "
        "name.")
    log_model: bool = Field(
        False, description="Upload the final model/ and adapter/ (FTP_MLFLOW_LOG_MODEL).")


@dataclass(frozen=True)
class Settings:
    """Where and how one pipeline run is tracked.

    Attributes:
        tracking_uri: The MLflow tracking URI.
        experiment: The experiment's name.
        run_name: The MLflow run's name.
        log_model: Whether the final ``model/`` (and ``adapter/``) folder is uploaded.
        artifact_location: Where a newly created experiment keeps its artifacts, or None to
            let the store decide (a tracking server knows its own artifact root).

    """

    tracking_uri: str
    experiment: str
    run_name: str
    log_model: bool
    artifact_location: str | None


def tracking_enabled(env: Mapping[str, str] | None = None,
                     table: MlflowSettings | None = None) -> bool:
    """Whether to track this run.

    ``FTP_MLFLOW`` if set; else the table's ``enabled`` if given; else whether a tracking URI
    is set (``MLFLOW_TRACKING_URI`` or the table's ``tracking_uri``).

    Tracking is opt-in so that installing the plugin into an environment (a CI machine, one
    where other plugins run their tests) does not make every ``ftp run`` in it write a
    database beside its pipeline file. Saying where runs should go also turns it on;
    ``FTP_MLFLOW=0`` turns it off regardless.

    Args:
        env: The environment to read (default: ``os.environ``).
        table: The validated ``[plugins.mlflow]`` table (default: all defaults).

    Raises:
        UserError: ``FTP_MLFLOW`` is set to something other than a yes or a no.

    """
    env = os.environ if env is None else env
    table = table or MlflowSettings()
    if env.get(ENABLE, "").strip():
        return _flag(env, ENABLE)
    if table.enabled is not None:
        return table.enabled
    return bool(env.get(TRACKING_URI, "").strip() or table.tracking_uri.strip())


def read_settings(pipeline_name: str, pipeline_dir: Path, run_dir: Path,
                  env: Mapping[str, str] | None = None,
                  table: MlflowSettings | None = None) -> Settings:
    """The options: each from ``env`` if set there, else from ``table``, else the default.

    Args:
        pipeline_name: The pipeline's name: the default experiment.
        pipeline_dir: The pipeline file's folder: the default store is ``mlruns/`` in it.
        run_dir: The run directory; its name is the default run name.
        env: The environment to read (default: ``os.environ``).
        table: The validated ``[plugins.mlflow]`` table (default: all defaults).

    Raises:
        UserError: A variable has a value the plugin cannot use.

    """
    env = os.environ if env is None else env
    table = table or MlflowSettings()
    uri = env.get(TRACKING_URI, "").strip()
    if not uri:
        # Written in the pipeline file, a relative path means relative to that file, as every
        # path in a pipeline does (MLflow itself would read it from the working directory).
        uri = _beside(table.tracking_uri.strip(), pipeline_dir)
    if not uri:
        db = (pipeline_dir / DEFAULT_STORE_DIR / DEFAULT_DB_NAME).resolve()
        uri = "sqlite:///" + db.as_posix()
    experiment = (env.get(EXPERIMENT_NAME, "").strip() or table.experiment.strip()
                  or pipeline_name)
    run_name = (env.get(RUN_NAME, "").strip() or table.run_name.strip()
                or run_dir.resolve().name)
    log_model = _flag(env, LOG_MODEL) if env.get(LOG_MODEL, "").strip() else table.log_model
    return Settings(
        tracking_uri=uri,
        experiment=experiment,
        run_name=run_name,
        log_model=log_model,
        artifact_location=local_artifact_location(uri),
    )


def _beside(uri: str, pipeline_dir: Path) -> str:
    """A ``sqlite:///relative/path`` URI made absolute against ``pipeline_dir``."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + (pipeline_dir / uri[len(prefix):]).resolve().as_posix()
    return uri


def local_artifact_location(uri: str) -> str | None:
    """``artifacts/`` beside a local SQLite database file; None for any other store.

    A client talking straight to a database has no artifact root of its own: MLflow would
    put artifacts in ``./mlruns`` of whatever folder ftp was started from. Keeping them next
    to the database keeps a local store in one folder, wherever ftp runs.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = uri[len(prefix):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return (Path(path).resolve().parent / ARTIFACTS_DIR).as_uri()


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UserError(f"environment variable {name}={env[name]!r}: expected 1/true/yes/on "
                    "or 0/false/no/off")
