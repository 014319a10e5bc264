"""'Did you mean' suggestions for misspelt names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> str:
    """A one-line message for an unknown component name, with suggestion and choices."""
    names = sorted(choices)
    listed = ", ".join(names) if names else "none installed"
    return f"unknown {kind} {name!r}{did_you_mean(name, names)}; available: {listed}"
