"""Built-in evaluator plugin `classification` (being written)."""

from __future__ import annotations

from ftp import hookimpl


@hookimpl
def ftp_evaluators() -> list[type]:
    """Register the evaluator(s) of this module."""
    return []
