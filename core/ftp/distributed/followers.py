"""The run folder as the other processes of a distributed run see it: read, never written.

Only the main process (rank 0) writes the run folder; the runner of every other process gets
a `FollowerRunDir`, whose writes do nothing, so the runner's code is the same in all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftp.rundir import RunDir


class FollowerRunDir(RunDir):
    """A run folder that the main process writes; this process only reads it."""

    def write_json(self, name: str, obj: Any) -> Path:
        """Nothing: the main process writes ``name``."""
        return self.file(name)

    def write_text(self, name: str, text: str) -> Path:
        """Nothing: the main process writes ``name``."""
        return self.file(name)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Nothing: the main process logs the (same) metrics."""

    def set_status(self, status: str, **info: Any) -> None:
        """Nothing: the main process keeps run.json."""

    def start(self, **info: Any) -> None:
        """Nothing: the main process starts the run."""

    def beat(self) -> None:
        """Nothing: the main process's heartbeat speaks for the run."""

    def start_heartbeat(self, every: float = 0.0) -> None:
        """Nothing: see `beat`."""
