"""One MLflow run, fed as an ftp pipeline runs.

Everything goes through ``MlflowClient`` with an explicit run id, never through MLflow's
fluent ``mlflow.start_run`` state, so the plugin neither depends on nor disturbs an MLflow run
the surrounding process may have open.

Tracking is a bystander of training: the first error talking to the store is reported as one
warning line and tracking stops for the rest of the run, which goes on. (A store that is down
would otherwise cost a timeout at every logged step.)
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ftp_mlflow.settings import Settings

# MLflow caps one log_batch request at 100 params and 1000 metrics.
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_MAX_TAG = 5000

T = TypeVar("T")


def warn(message: str) -> None:
    """Report a problem of the plugin on stderr, as one line."""
    from ftp import mask_text

    # Store errors quote the tracking URI, password and all.
    print(mask_text(f"warning: plugin 'mlflow': {message}"), file=sys.stderr, flush=True)


class Tracker:
    """Logs one ftp run to one MLflow run; every method is safe to call after a failure.

    Args:
        client: An ``mlflow.tracking.MlflowClient`` for the store.
        run_id: The MLflow run to log to.
        settings: The plugin's options.

    """

    def __init__(self, client: Any, run_id: str, settings: Settings) -> None:
        self.client = client
        self.run_id = run_id
        self.settings = settings
        self.broken: str | None = None  # why tracking stopped, once it has

    @classmethod
    def start(cls, settings: Settings, tags: Mapping[str, str]) -> Tracker | None:
        """Open the experiment (creating it if needed) and start a run; None if the store fails.

        Args:
            settings: Where to track, and the experiment and run names.
            tags: Tags of the new run.

        """
        try:
            from mlflow.tracking import MlflowClient

            # Creating a SQLite store runs its schema migrations, announced at INFO level.
            for name in ("mlflow.store.db.utils", "alembic"):
                logging.getLogger(name).setLevel(logging.WARNING)
            client = MlflowClient(tracking_uri=settings.tracking_uri)
            experiment_id = _experiment_id(client, settings)
            tags = {"mlflow.user": _user(), **tags}
            run = client.create_run(experiment_id, run_name=settings.run_name,
                                    tags={k: v[:_MAX_TAG] for k, v in _masked(tags).items()})
        except Exception as exc:
            warn(f"cannot start an MLflow run at {settings.tracking_uri}, so this run is not "
                 f"tracked: {_one_line(exc)}")
            return None
        return cls(client, run.info.run_id, settings)

    # -- logging --------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, str]) -> None:
        """Log params (names must be new to this run: MLflow params cannot change)."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in _masked(params).items()]
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            chunk = items[start:start + _PARAMS_PER_BATCH]
            self._guard("logging params",
                        lambda c=chunk: self.client.log_batch(self.run_id, params=c))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log metric values at ``step``, all with the same timestamp."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in metrics.items()]
        for start in range(0, len(items), _METRICS_PER_BATCH):
            chunk = items[start:start + _METRICS_PER_BATCH]
            self._guard("logging metrics",
                        lambda c=chunk: self.client.log_batch(self.run_id, metrics=c))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set tags on the run (values cut to a length every store accepts)."""
        from mlflow.entities import RunTag

        items = [RunTag(k, v[:_MAX_TAG]) for k, v in _masked(tags).items()]
        self._guard("setting tags", lambda: self.client.log_batch(self.run_id, tags=items))

    def log_files(self, folder: Path, names: Iterable[str]) -> None:
        """Upload the files among ``names`` that exist in ``folder``, to the artifact root."""
        for name in names:
            path = folder / name
            if path.is_file():
                self._guard(f"uploading {name}",
                            lambda p=path: self.client.log_artifact(self.run_id, str(p)))

    def log_folder(self, folder: Path, artifact_path: str) -> None:
        """Upload a whole folder (e.g. the model) under ``artifact_path``, if it exists."""
        if folder.is_dir():
            self._guard(f"uploading {folder.name}/", lambda: self.client.log_artifacts(
                self.run_id, str(folder), artifact_path))

    def end(self, status: str) -> None:
        """End the run with an MLflow status: FINISHED, FAILED or KILLED.

        Tried even after an earlier failure, so a run that could be started is not left
        RUNNING when the store is reachable again; a run whose logging stopped early is
        tagged ``ftp.tracking_incomplete`` with the reason.
        """
        if self.broken:
            with contextlib.suppress(Exception):
                self.client.set_tag(self.run_id, "ftp.tracking_incomplete", self.broken[:_MAX_TAG])
        try:
            self.client.set_terminated(self.run_id, status)
        except Exception as exc:
            if not self.broken:
                warn(f"cannot end MLflow run {self.run_id}: {_one_line(exc)}")

    # -- failures -------------------------------------------------------------------------

    def _guard(self, what: str, call: Callable[[], T]) -> T | None:
        if self.broken:
            return None
        try:
            return call()
        except Exception as exc:
            self.broken = f"{what}: {_one_line(exc)}"
            warn(f"{self.broken}; MLflow tracking stops here, the run goes on")
            return None


def _masked(values: Mapping[str, str]) -> dict[str, str]:
    """Params or tags with secrets masked: by the last part of the name, and in every value.

    The one way out to the store, so nothing that reaches MLflow carries a password or token.
    """
    from ftp import mask_secrets

    # A dotted name ("data.hub.token") is judged by its last word, as a nested key would be.
    return mask_secrets(dict(values))


def _experiment_id(client: Any, settings: Settings) -> str:
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(settings.experiment,
                                        artifact_location=settings.artifact_location)
    except Exception:
        # Another run may have created it in the meantime.
        experiment = client.get_experiment_by_name(settings.experiment)
        if experiment is None:
            raise
        return experiment.experiment_id


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"

