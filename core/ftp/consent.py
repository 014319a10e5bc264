"""Consent before a pipeline file makes ftp run code that the file names.

A pipeline.toml is data a user may have downloaded. Two of its settings make ftp run code that
is not ftp's or an installed plugin's: ``[pipeline] plugins`` (Python modules or files,
imported while the pipeline is validated) and ``trust_remote_code = true`` (model code from the
Hub, run when the model loads). Neither is acted on unless the user allows it for this command:
``--allow-code`` on the command line or ``FTP_ALLOW_CODE=1`` in the environment.
"""

from __future__ import annotations

import os
from typing import Any

from ftp.errors import UserError

ALLOW_ENV = "FTP_ALLOW_CODE"
_TRUE = ("1", "true", "yes", "on")


def allowed_by_env() -> bool:
    """Whether ``FTP_ALLOW_CODE`` allows code named by pipeline files."""
    return os.environ.get(ALLOW_ENV, "").strip().lower() in _TRUE


def code_named(raw: dict[str, Any]) -> list[str]:
    """What code the (parsed, overridden) pipeline file would run, in words, in file order."""
    found: list[str] = []
    pipeline = raw.get("pipeline")
    if isinstance(pipeline, dict) and isinstance(pipeline.get("plugins"), list):
        found += [f"plugin {spec!r} ([pipeline] plugins)" for spec in pipeline["plugins"]
                  if isinstance(spec, str)]
    found += [f"model code from the Hub ({where} = true)"
              for where in _remote_code_keys(raw, "")]
    return found


def _remote_code_keys(node: Any, path: str) -> list[str]:
    """The TOML paths of every ``trust_remote_code = true``, wherever a component takes it."""
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "trust_remote_code" and value is True:
                out.append(where)
            else:
                out += _remote_code_keys(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _remote_code_keys(value, f"{path}[{i}]")
    return out


def require_consent(raw: dict[str, Any], source: str, allowed: bool | None = None) -> None:
    """Refuse a pipeline that names code to run, unless the user allowed it.

    Args:
        raw: The pipeline file's contents, after ``--set`` overrides.
        source: The pipeline file, for the message.
        allowed: ``--allow-code`` was given; None or False falls back to ``FTP_ALLOW_CODE``.

    Raises:
        UserError: one line naming what would run and how to allow it.

    """
    if allowed or allowed_by_env():
        return
    named = code_named(raw)
    if named:
        raise UserError(f"{source} would run code it names: {'; '.join(named)}. Only if you "
                        f"trust this file, allow it with --allow-code or {ALLOW_ENV}=1")
