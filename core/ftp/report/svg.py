"""Line charts as inline SVG, drawn here: no plotting library, no script, opens from disk."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ftp.report.html import esc

#: Distinguishable on white, in the order series are drawn.
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf")
WIDTH, HEIGHT = 460, 250
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 30, 34
LEGEND_ROW = 16
#: Legend entries: where they start, the line sample before the text, the space after it and
#: a character's width at the charts' font size (generous, so entries never touch).
LEGEND_LEFT, LEGEND_MARK, LEGEND_GAP, CHAR_WIDTH = 12, 20, 14, 6.2


@dataclass
class Series:
    """One curve: its label and its (x, y) points."""

    label: str
    points: list[tuple[float, float]]
    dashed: bool = False


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values spanning [low, high]."""
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    # From the round value at or below `low` to the one at or above `high`: the curve never
    # touches the frame without a labelled tick beyond it.
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def tick_text(value: float) -> str:
    """A tick label: short, without float noise."""
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.1e}"
    return f"{value:.4g}"


def line_chart(title: str, series: Sequence[Series], x_label: str = "step") -> str:
    """An SVG line chart of ``series`` sharing axes; empty string when nothing is plottable.

    Non-finite points are left out (a NaN loss is reported elsewhere, not drawn as 0).
    """
    drawn = [Series(s.label, [(x, y) for x, y in s.points
                              if math.isfinite(x) and math.isfinite(y)], s.dashed)
             for s in series]
    drawn = [s for s in drawn if s.points]
    if not drawn:
        return ""
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points]
    x_ticks = _nice_ticks(min(xs), max(xs))
    y_ticks = _nice_ticks(min(ys), max(ys))
    x0, x1 = min(x_ticks[0], min(xs)), max(x_ticks[-1], max(xs))
    y0, y1 = min(y_ticks[0], min(ys)), max(y_ticks[-1], max(ys))
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    # The legend has rows of its own above the plot, so it never hides a curve.
    places = _legend_places([s.label for s in drawn]) if len(drawn) > 1 else []
    legend_rows = max(row for _, row in places) + 1 if places else 0
    top = TOP + legend_rows * LEGEND_ROW
    height = HEIGHT + legend_rows * LEGEND_ROW
    plot_w, plot_h = WIDTH - LEFT - RIGHT, height - top - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y0) / (y1 - y0) * plot_h

    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
           f'height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
           f'aria-label="{esc(title)}">',
           f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" class="title">{esc(title)}</text>',
           f'<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>']
    for t in y_ticks:
        y = py(t)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                   'class="grid"/>')
        out.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{esc(tick_text(t))}</text>')
    for t in x_ticks:
        x = px(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" '
                   'class="grid"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                   f'{esc(tick_text(t))}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{height - 4}" text-anchor="middle" '
               f'class="axis">{esc(x_label)}</text>')
    for i, s in enumerate(drawn):
        colour = COLOURS[i % len(COLOURS)]
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s.points)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" '
                   f'stroke-width="1.8"{dash}><title>{esc(s.label)}</title></polyline>')
        if len(s.points) == 1:  # one point is no line: mark it
            (x, y), = s.points
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
        if places:
            lx, row = places[i]
            ly = TOP + row * LEGEND_ROW
            out.append(f'<line x1="{lx:.1f}" x2="{lx + 16:.1f}" y1="{ly - 4}" y2="{ly - 4}" '
                       f'stroke="{colour}" stroke-width="2.5"{dash}/>')
            out.append(f'<text x="{lx + 20:.1f}" y="{ly}">{esc(_short(s.label))}</text>')
    out.append("</svg>")
    return "".join(out)


def _legend_places(labels: Sequence[str]) -> list[tuple[float, int]]:
    """Where each legend entry starts (x) and on which row, entries wrapped to the width.

    Each entry is as wide as its text (estimated from the character count), so long names
    (``rewards/numeric_answer/mean``) never run into the next entry.
    """
    places = []
    x, row = float(LEGEND_LEFT), 0
    for label in labels:
        width = LEGEND_MARK + len(_short(label)) * CHAR_WIDTH + LEGEND_GAP
        if x > LEGEND_LEFT and x + width > WIDTH - RIGHT:
            x, row = float(LEGEND_LEFT), row + 1
        places.append((x, row))
        x += width
    return places


def _short(label: str, most: int = 32) -> str:
    return label if len(label) <= most else label[:most - 1] + "…"
