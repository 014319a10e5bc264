"""Reading a JSON file that a run folder or a model folder may lack, or hold half-written.

A run folder is read while its run is still writing it (``ftp status``, the report of a run
that died), and a model folder may come without a ``config.json`` or a tokenizer config: a
reader there wants what is there, or nothing, never an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or an empty dict when it is missing, unreadable or not one.

    Args:
        path: The file to read.

    Returns:
        The parsed object; ``{}`` for a missing or unreadable file, invalid (e.g. half-written)
        JSON, or JSON that is not an object.

    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
