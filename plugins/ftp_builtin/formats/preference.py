"""Built-in format plugin `preference` (being written)."""

from __future__ import annotations

from ftp import hookimpl


@hookimpl
def ftp_formats() -> list[type]:
    """Register the format(s) of this module."""
    return []
