"""The plugin's options, read from environment variables.

A pipeline file has no table for the settings of plugins that provide no component (its
sections are validated strictly), so the options come from the environment: two of MLflow's
own variables, and a few prefixed ``FTP_MLFLOW_``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ftp import UserError

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


def tracking_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether to track this run: ``FTP_MLFLOW`` if set, else whether a tracking URI is set.

    Tracking is opt-in so that installing the plugin into an environment (a CI machine, one
    where other plugins run their tests) does not make every ``ftp run`` in it write a
    database beside its pipeline file. Setting MLflow's own ``MLFLOW_TRACKING_URI`` says
    where runs should go, and so also turns it on; ``FTP_MLFLOW=0`` turns it off regardless.

    Raises:
        UserError: ``FTP_MLFLOW`` is set to something other than a yes or a no.

    """
    env = os.environ if env is None else env
    if env.get(ENABLE, "").strip():
        return _flag(env, ENABLE)
    return bool(env.get(TRACKING_URI, "").strip())


def read_settings(pipeline_name: str, pipeline_dir: Path, run_dir: Path,
                  env: Mapping[str, str] | None = None) -> Settings:
    """Read the options from ``env`` (default: ``os.environ``).

    Args:
        pipeline_name: The pipeline's name: the default experiment.
        pipeline_dir: The pipeline file's folder: the default store is ``mlruns/`` in it.
        run_dir: The run directory; its name is the default run name.
        env: The environment to read.

    Raises:
        UserError: A variable has a value the plugin cannot use.

    """
    env = os.environ if env is None else env
    uri = env.get(TRACKING_URI, "").strip()
    if not uri:
        db = (pipeline_dir / DEFAULT_STORE_DIR / DEFAULT_DB_NAME).resolve()
        uri = "sqlite:///" + db.as_posix()
    experiment = env.get(EXPERIMENT_NAME, "").strip() or pipeline_name
    run_name = env.get(RUN_NAME, "").strip() or run_dir.resolve().name
    return Settings(
        tracking_uri=uri,
        experiment=experiment,
        run_name=run_name,
        log_model=_flag(env, LOG_MODEL),
        artifact_location=local_artifact_location(uri),
    )


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
