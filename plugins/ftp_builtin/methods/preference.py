"""Built-in method plugin `preference` (being written)."""

from __future__ import annotations

from ftp import hookimpl


@hookimpl
def ftp_methods() -> list[type]:
    """Register the method(s) of this module."""
    return []
