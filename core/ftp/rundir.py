"""The run directory: everything a run wrote, readable without ftp.

Layout::

    runs/NAME/
      run.json              status (running / finished / failed / interrupted; killed when a
                            running owner died), pid, host, heartbeat, timings, the failed step
      .lock                 held by the live run (ftp.runlock)
      manifest.json         what a resume must match (ftp.checkpoints.identity), per stage
      pipeline.toml         the pipeline file as given; resolved.json: after --set and defaults
      environment.json      python, packages and plugins with their versions, the allocator
      data.json             per dataset: source fingerprint, row counts, fingerprint of records
      metrics.jsonl         one JSON object per logged training step, with the stage's name
      results.json          every evaluator's results, by stage (``base`` = before training)
      summary.md            a short human-readable account
      report.html           curves, evaluations, answers, data, timings (ftp.report)
      stages/STAGE/         checkpoints/step-N (ftp.checkpoints), the stage's adapter and model
      adapter/              the last stage's adapter (when it trained one)
      model/                the final model, loadable by plain transformers
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from ftp.errors import UserError
from ftp.jsonfiles import read_json_object
from ftp.masking import mask_secrets, mask_text
from ftp.runlock import HEARTBEAT_EVERY_S, is_live, refuse_if_live

STATUS_FILE = "run.json"
#: Written into every run.json: how `--overwrite` tells an ftp run from any other folder.
WRITER = "ftp"
RUN_STATES = ("running", "finished", "failed", "interrupted", "killed")


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n"


class RunDir:
    """A run's output folder, written atomically file by file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # run.json is rewritten by the run and by its heartbeat thread.
        self._status_lock = threading.Lock()
        self._beating: threading.Event | None = None

    @classmethod
    def create(cls, path: Path, overwrite: bool = False) -> RunDir:
        """Create the folder; refuse to reuse a non-empty one unless ``overwrite``.

        Raises:
            UserError: when the folder holds an earlier run and ``overwrite`` is false.

        """
        if path.exists() and not path.is_dir():
            raise UserError(f"output path {path} exists and is not a folder")
        if path.is_dir() and any(path.iterdir()):
            refuse_if_live(path, cls(path).status(), "--overwrite" if overwrite else "to reuse it")
            if not overwrite:
                state = cls(path).state()
                what = "a finished run" if state == "finished" else f"an earlier run ({state})"
                resume = "" if state == "finished" else "pass --resume to continue it, "
                raise UserError(
                    f"{path} already holds {what}; {resume}pass --overwrite to replace it, or "
                    "--output-dir DIR to write elsewhere"
                )
            check_replaceable(path)
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def open_existing(cls, path: Path) -> RunDir:
        """Reopen an earlier run's folder (to resume it); nothing in it is removed.

        Raises:
            UserError: when ``path`` holds no earlier run.

        """
        run = cls(path)
        if not run.file(STATUS_FILE).is_file():
            raise UserError(f"{path} holds no earlier run to resume (no {STATUS_FILE}); "
                            "use --output-dir to point at it")
        return run

    def file(self, name: str) -> Path:
        """Path of a file in the run directory."""
        return self.path / name

    def write_json(self, name: str, obj: Any) -> Path:
        """Write JSON atomically (temp file, then rename), so readers never see half a file.

        Secrets are masked (`ftp.masking`): a run folder is shared, uploaded and attached to
        issues, so no token or password is ever written into it.
        """
        target = self.file(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(_dump(mask_secrets(obj)), encoding="utf-8")
        os.replace(tmp, target)
        return target

    def write_text(self, name: str, text: str) -> Path:
        """Write a text file atomically, URI passwords and tokens masked."""
        target = self.file(name)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(mask_text(text), encoding="utf-8")
        os.replace(tmp, target)
        return target

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl."""
        with self.file("metrics.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")

    def read_json(self, name: str) -> dict[str, Any]:
        """The JSON object in file ``name``, or an empty dict (missing, unreadable, not one)."""
        return read_json_object(self.file(name))

    def status(self) -> dict[str, Any]:
        """The contents of run.json, or an empty dict."""
        return self.read_json(STATUS_FILE)

    def state(self) -> str:
        """The run's state: run.json's status, except ``killed`` for a dead ``running`` owner."""
        data = self.status()
        state = data.get("status", "unknown")
        if state == "running" and not is_live(self.path, data):
            return "killed"
        return state

    def set_status(self, status: str, **info: Any) -> None:
        """Update run.json with a status and more fields."""
        with self._status_lock:
            data = self.status()
            data.update(info)
            data["status"] = status
            data["written_by"] = WRITER
            data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self.write_json(STATUS_FILE, data)

    def start(self, **info: Any) -> None:
        """Begin (or resume) a run: run.json holds only ``info``, status ``running``.

        Fields of an earlier attempt (its error, failed step, interruption) are dropped, so a
        resumed run never shows a stale error.
        """
        with self._status_lock:
            self.write_json(STATUS_FILE, {"status": "running", **info, "written_by": WRITER,
                                          "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def beat(self) -> None:
        """Record that the owner is alive (``heartbeat`` in run.json)."""
        with self._status_lock:
            data = self.status()
            if data.get("status") != "running":
                return
            data["heartbeat"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            data["heartbeat_unix"] = round(time.time(), 1)
            self.write_json(STATUS_FILE, data)

    def start_heartbeat(self, every: float = HEARTBEAT_EVERY_S) -> None:
        """Beat now and then every ``every`` seconds from a daemon thread, until stopped."""
        self.beat()
        stop = threading.Event()
        self._beating = stop

        def loop() -> None:
            while not stop.wait(every):
                # A full disk must not kill the run from a side thread.
                with contextlib.suppress(OSError):
                    self.beat()

        threading.Thread(target=loop, name="ftp-heartbeat", daemon=True).start()

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat thread."""
        if self._beating is not None:
            self._beating.set()
            self._beating = None


def check_replaceable(path: Path) -> None:
    """Refuse to let ``--overwrite`` delete ``path`` unless it holds a run that ftp wrote.

    The one gate before a run folder is deleted: a folder is replaceable only when its
    run.json was written by ftp. A home directory, a project folder or a dataset is refused,
    and nothing in it is touched.

    Raises:
        UserError: naming the folder and why it is not replaced.

    """
    status = RunDir(path).status()
    # Runs from before run.json carried `written_by` are recognised by ftp's own fields.
    legacy = status.get("status") in RUN_STATES and {"pipeline", "updated"} <= set(status)
    if status.get("written_by") != WRITER and not legacy:
        why = (f"its {STATUS_FILE} was not written by ftp" if path.joinpath(STATUS_FILE).exists()
               else f"it has no {STATUS_FILE}")
        raise UserError(f"--overwrite replaces only a folder holding an earlier ftp run, and "
                        f"{path} is not one ({why}); nothing was deleted. Choose another "
                        "--output-dir, or empty the folder yourself")
