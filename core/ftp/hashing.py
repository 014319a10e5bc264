"""SHA-256 fingerprints of values and files: what data.json records and cache keys are made of."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ftp.packedrows import PackedRows


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=_default)


def _default(obj: Any) -> Any:
    # Packed rows inside a value hash as the list they read as, never as their repr.
    return list(obj) if isinstance(obj, PackedRows) else str(obj)


def digest(obj: Any) -> str:
    """SHA-256 of a JSON-serialisable value (keys sorted, so dict order does not matter).

    A list (or tuple) is hashed item by item, as ``json.dumps`` would write it — ``[``, the
    items joined by ``", "``, ``]`` — so the hash is that of the whole serialisation while
    only one row's text exists at a time: a million-row dataset is not written out again as
    one string.
    """
    if not isinstance(obj, list | tuple | PackedRows):
        return hashlib.sha256(_dumps(obj).encode("utf-8")).hexdigest()
    h = hashlib.sha256(b"[")
    for i, item in enumerate(obj):
        if i:
            h.update(b", ")
        h.update(_dumps(item).encode("utf-8"))
    h.update(b"]")
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
