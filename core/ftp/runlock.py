"""Who owns a run folder: a lock held for the run's whole life, and liveness of others.

The lock is an ``flock`` on ``RUN_DIR/.lock``; the kernel drops it when the owner dies, however
it dies (SIGKILL, the OOM killer), so a folder whose run.json says ``running`` while nobody
holds the lock belongs to a dead run: it is reported as ``killed`` and can be resumed. The lock
file also names its owner (pid, host, start), so a refusal can say who holds it. On file
systems without working locks across hosts, a fresh heartbeat in run.json from another host
counts as live too.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ftp.errors import UserError

LOCK_FILE = ".lock"
#: A run on another host whose heartbeat is younger than this is taken to be alive.
HEARTBEAT_FRESH_S = 180.0
HEARTBEAT_EVERY_S = 30.0

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; liveness by heartbeat only
    fcntl = None  # type: ignore[assignment]


def owner_info() -> dict[str, Any]:
    """The current process as run.json and the lock file record it: pid, host, start."""
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def describe(owner: dict[str, Any]) -> str:
    """``pid 123 on host gpu-4, started 2026-...``."""
    text = f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}"
    return text + (f", started {owner['started']}" if owner.get("started") else "")


class RunLock:
    """An exclusive lock on a run folder, held until `release` or process exit."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and record this process as the owner.

        Raises:
            UserError: when a live process holds it, naming its pid and host.

        """
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise UserError(f"{self.folder} is in use by a live run "
                                f"({describe(read_owner(self.folder))}); wait for it to end, "
                                "stop it, or use --output-dir DIR to write elsewhere") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner_info()).encode("utf-8"))
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock (the file stays: it is harmless, and names the last owner)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_owner(folder: Path) -> dict[str, Any]:
    """The owner the lock file names, or an empty dict."""
    try:
        return json.loads((folder / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def is_locked(folder: Path) -> bool:
    """Whether a live process holds the folder's lock (a quick try, released at once)."""
    path = folder / LOCK_FILE
    if fcntl is None or not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def is_live(folder: Path, status: dict[str, Any]) -> bool:
    """Whether the run in ``folder`` is alive: its lock is held, or (another host) it beats."""
    if is_locked(folder):
        return True
    if status.get("status") != "running" or status.get("host") == socket.gethostname():
        return False
    beat = status.get("heartbeat_unix")
    return isinstance(beat, int | float) and time.time() - beat < HEARTBEAT_FRESH_S


def refuse_if_live(folder: Path, status: dict[str, Any], doing: str) -> None:
    """Refuse ``doing`` (e.g. ``--overwrite``) on a live run, naming its owner.

    Raises:
        UserError: when the run in ``folder`` is alive.

    """
    if folder.is_dir() and is_live(folder, status):
        owner = read_owner(folder) or status
        raise UserError(f"{folder} holds a live run ({describe(owner)}); refusing {doing}. "
                        "Stop that run first, or use --output-dir DIR to write elsewhere")
