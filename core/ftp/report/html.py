"""The pieces every report page is made of: escaping, numbers, tables, the page itself.

Everything that comes from a run folder (answers, prompts, errors, file names) goes through
`esc`: an answer may hold ``<script>`` and must show as text.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1180px;
       color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px;
     border-bottom: 1px solid #ddd; padding-bottom: 3px; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 8px 0 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.answer { white-space: pre-wrap; max-width: 420px; }
.pass { color: #176b2c; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; }
.changed { font-weight: 600; } .muted { color: #777; }
.status-finished { color: #176b2c; } .status-failed, .status-killed { color: #b3261e; }
.status-interrupted, .status-running { color: #a15c00; }
.charts { display: flex; flex-wrap: wrap; gap: 10px; }
svg.chart { border: 1px solid #e3e3e3; background: #fff; }
svg.chart text { font: 11px system-ui, sans-serif; fill: #333; }
svg.chart text.title { font-size: 13px; font-weight: 600; }
svg.chart .frame { fill: none; stroke: #999; } svg.chart .grid { stroke: #eee; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 8px; overflow-x: auto; }
"""


#: Marks a page ftp wrote: only such a file is replaced by the next ``ftp compare -o``.
GENERATOR = '<meta name="generator" content="ftp">'


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML (and SVG), quotes included."""
    return html.escape(str(value), quote=True)


def number(value: Any) -> str:
    """A metric value for a table: 4 significant digits, integers whole, NaN as written."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return "" if value is None else str(value)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a plain int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def change(before: Any, after: Any) -> str:
    """The cell for ``after - before``, coloured by sign; empty when not both numbers."""
    if not (is_number(before) and is_number(after)):
        return "<td></td>"
    if not (math.isfinite(before) and math.isfinite(after)):
        return "<td></td>"
    delta = after - before
    # Not green/red: whether up is better depends on the metric (accuracy vs loss).
    cls = "changed" if delta else "muted"
    sign = "+" if delta > 0 else ""
    return f'<td class="num {cls}">{sign}{esc(number(delta))}</td>'


def cell(value: Any) -> str:
    """A table cell: numbers right-aligned, everything escaped."""
    if is_number(value):
        return f'<td class="num">{esc(number(value))}</td>'
    return f"<td>{esc(number(value))}</td>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], raw: bool = False) -> str:
    """An HTML table; with ``raw`` the row cells are ready-made ``<td>`` markup."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(c if raw else cell(c) for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, body: Sequence[str]) -> str:
    """A whole self-contained HTML document."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"{GENERATOR}"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
