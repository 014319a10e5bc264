"""Cache folders built once, safely, by however many processes ask at the same time.

A folder in the model cache (a fetched catalog package, a converted GGUF model) is built in a
unique temporary folder next to it, under a lock, and renamed into place only once complete,
with a completion marker that records what it was built from. A reader trusts a folder only
when its marker matches what it would build now, so a half-written folder (a killed process,
a full disk) or one built from another package version or converter is rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: The completion marker: written last, inside the temporary folder, before the rename.
MARKER = ".ftp-complete.json"


def is_complete(folder: Path, stamp: dict[str, Any]) -> bool:
    """Whether ``folder`` was completely built from what ``stamp`` describes."""
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8")) == stamp
    except (OSError, ValueError):
        return False


def build_once(folder: Path, stamp: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """Return ``folder``, building it with ``build(tmp)`` first unless it is already complete.

    Args:
        folder: The cache folder; ftp owns it and its parent.
        stamp: What the folder is built from (versions, hashes): its completion marker.
        build: Fills the empty temporary folder it is given; raise to leave nothing behind.

    """
    if is_complete(folder, stamp):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f".{folder.name}.lock"):
        if is_complete(folder, stamp):
            return folder  # another process built it while this one waited
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
        try:
            build(tmp)
            (tmp / MARKER).write_text(json.dumps(stamp, indent=1, sort_keys=True),
                                      encoding="utf-8")
            if folder.exists():
                shutil.rmtree(folder)  # incomplete or stale: ours, under ftp's own key
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return folder


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (released by the OS if the process dies)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the unique temp folder and rename still hold
        yield
        return
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
