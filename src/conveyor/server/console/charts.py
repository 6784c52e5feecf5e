"""Line charts as inline SVG, drawn on the server: no script, no image requests.

Time runs left to right, ending now, over the history kept so far (at least a minute, at
most the window: an hour); values start at zero. Colours come from the stylesheet through
each line's class, so the markup carries no styles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from conveyor.server.console.history import Point
from conveyor.server.console.html import Html, fmt, join

WIDTH = 300
HEIGHT = 72
PAD = 4  # room for the dots at the edges
MIN_SPAN = 60.0


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    css: str
    points: Sequence[Point]


def chart(
    title: str,
    lines: Sequence[Line],
    *,
    window: float,
    show: Callable[[float], str] = lambda value: f"{value:g}",
    now: float | None = None,
) -> Html:
    """A figure: the title with each line's latest value, the lines, the scale's top."""
    now = time.time() if now is None else now
    first = min((at for line in lines for at, _ in line.points), default=now)
    span = min(window, max(now - first, MIN_SPAN))
    start = now - span
    top = _scale_top(max((value for line in lines for _, value in line.points), default=0.0))

    def x(at: float) -> float:
        return PAD + max(0.0, min(1.0, (at - start) / span)) * (WIDTH - 2 * PAD)

    def y(value: float) -> float:
        return HEIGHT - PAD - (value / top) * (HEIGHT - 2 * PAD)

    drawn = []
    for line in lines:
        coordinates = " ".join(f"{x(at):.1f},{y(value):.1f}" for at, value in line.points)
        if len(line.points) > 1:
            drawn.append(fmt('<polyline class="line {}" points="{}"/>', line.css, coordinates))
        if line.points:
            at, value = line.points[-1]
            drawn.append(
                fmt(
                    '<circle class="dot {}" cx="{}" cy="{}" r="2.5"/>',
                    line.css,
                    f"{x(at):.1f}",
                    f"{y(value):.1f}",
                )
            )
    legend = join(
        fmt(
            '<span class="key {}">{} <b>{}</b></span>',
            line.css,
            line.name,
            show(line.points[-1][1]) if line.points else "—",
        )
        for line in lines
    )
    label = f"{title}: " + ", ".join(
        f"{line.name} {show(line.points[-1][1]) if line.points else 'no data'}" for line in lines
    )
    minutes = f"{span / 60:.0f} min ago"
    svg = fmt(
        '<svg class="plot" viewBox="0 0 {w} {h}" role="img" '
        'aria-label="{label}"><line class="axis" x1="0" y1="{b}" x2="{w}" y2="{b}"/>'
        '<line class="grid" x1="0" y1="{t}" x2="{w}" y2="{t}"/>{lines}</svg>',
        w=WIDTH,
        h=HEIGHT,
        t=PAD,
        b=HEIGHT - PAD,
        label=label,
        lines=join(drawn),
    )
    scale = fmt(
        '<div class="scale"><span>{}</span><span>top {}</span><span>now</span></div>',
        minutes,
        show(top),
    )
    return fmt(
        '<figure class="chart"><figcaption>{} {}</figcaption>{}{}</figure>',
        title,
        legend,
        svg,
        scale,
    )


def _scale_top(highest: float) -> float:
    """A round number at or above ``highest`` (1, 2 or 5 times a power of ten)."""
    if highest <= 0:
        return 1.0
    step = 10.0 ** _floor_log10(highest)
    for multiple in (1, 2, 5, 10):
        if highest <= multiple * step:
            return multiple * step
    return 10 * step  # pragma: no cover


def _floor_log10(value: float) -> int:
    exponent = 0
    while value >= 10:
        value /= 10
        exponent += 1
    while value < 1:
        value *= 10
        exponent -= 1
    return exponent
