"""Charts drawn on the server as inline SVG: line charts (with an optional band and flagged
points) and stacked bar charts. No script and no style attribute (the Content-Security-Policy
allows neither): colours come from CSS classes in app.css (`s0`…`s5` for series, `o-<outcome>`
for answer outcomes); every point and bar carries a <title> with its value."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

W, H = 560, 230
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 50, 32
PLOT_W, PLOT_H = W - LEFT - RIGHT, H - TOP - BOTTOM
MAX_X_LABELS = 8

Format = Callable[[float], str]


@dataclass
class Series:
    name: str
    values: Sequence[float | None]
    css: str  # the class that colours it


def ms(value: float) -> str:
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def share(value: float) -> str:
    return f"{value * 100:.0f}%"


def score(value: float) -> str:
    return f"{value:.3f}"


def count(value: float) -> str:
    return f"{value:.0f}"


def seconds(value: float) -> str:
    return f"{value:.1f} s"


def _nice_step(span: float, ticks: int = 4) -> float:
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


class _Frame:
    """The axes of one chart: a value to a y coordinate, a slot to an x coordinate."""

    def __init__(self, slots: int, values: list[float], zero: bool, integer: bool = False):
        low, high = (min(values), max(values)) if values else (0.0, 1.0)
        if zero:
            low, high = min(low, 0.0), max(high, 0.0)
        if high - low < 1e-9:
            high = low + (abs(low) or 1.0)
        self.step = _nice_step(high - low)
        if integer:  # counts: whole ticks
            self.step = max(1.0, math.ceil(self.step))
        self.low = math.floor(low / self.step) * self.step
        self.high = math.ceil(high / self.step) * self.step
        self.slots = max(slots, 1)

    def x(self, slot: int) -> float:
        return LEFT + (slot + 0.5) * PLOT_W / self.slots

    def y(self, value: float) -> float:
        return TOP + PLOT_H * (1 - (value - self.low) / (self.high - self.low))

    @property
    def slot_width(self) -> float:
        return PLOT_W / self.slots


def _open(title: str) -> list[str]:
    t = escape(title)
    return [
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{t}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{t}</title>'
        f'<text class="heading" x="8" y="16">{t}</text>'
    ]


def _axes(frame: _Frame, labels: Sequence[str], fmt: Format) -> list[str]:
    out = []
    tick = frame.low
    while tick <= frame.high + frame.step / 2:
        y = frame.y(tick)
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}"/>')
        out.append(
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(fmt(tick))}</text>"
        )
        tick += frame.step
    every = max(1, math.ceil(len(labels) / MAX_X_LABELS))
    for i, label in enumerate(labels):
        if i % every == 0:
            out.append(
                f'<text class="tick" x="{frame.x(i):.1f}" y="{H - BOTTOM + 16}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    y0 = TOP + PLOT_H
    out.append(f'<line class="axis" x1="{LEFT}" y1="{y0}" x2="{W - RIGHT}" y2="{y0}"/>')
    return out


def _legend(series: Sequence[Series]) -> list[str]:
    out, x = [], LEFT
    for s in series:
        out.append(f'<rect class="swatch {s.css}" x="{x}" y="24" width="10" height="10"/>')
        out.append(f'<text class="legend" x="{x + 14}" y="33">{escape(s.name)}</text>')
        x += 26 + 7 * len(s.name)
    return out


def _empty(message: str) -> str:
    return (
        f'<text class="empty" x="{LEFT + PLOT_W / 2}" y="{TOP + PLOT_H / 2}" '
        f'text-anchor="middle">{escape(message)}</text>'
    )


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    fmt: Format,
    *,
    band: Sequence[tuple[float | None, float | None]] | None = None,
    flagged: Sequence[bool] | None = None,
    zero: bool = True,
    empty: str = "nothing recorded in these days",
) -> Markup:
    """One line per series over the slots named by `labels` (gaps where a value is None);
    `band`: a shaded low–high range per slot; `flagged`: slots of the first series ringed."""
    values = [v for s in series for v in s.values if v is not None]
    spread = [v for pair in band or [] for v in pair if v is not None]
    frame = _Frame(len(labels), values + spread, zero)
    out = _open(title) + _axes(frame, labels, fmt) + _legend(series)
    if band:
        out += _band(frame, band)
    if not values:
        out.append(_empty(empty))
    for s in series:
        segment: list[str] = []
        segments = [segment]
        for i, v in enumerate(s.values):
            if v is None:
                segment = []
                segments.append(segment)
            else:
                segment.append(f"{frame.x(i):.1f},{frame.y(v):.1f}")
        for points in segments:
            if len(points) > 1:
                out.append(f'<polyline class="line {s.css}" points="{" ".join(points)}"/>')
        for i, v in enumerate(s.values):
            if v is None:
                continue
            ring = flagged is not None and s is series[0] and flagged[i]
            what = f"{labels[i]} · {s.name}: {fmt(v)}" + (" · outside the band" if ring else "")
            if ring:
                out.append(
                    f'<circle class="flag" cx="{frame.x(i):.1f}" cy="{frame.y(v):.1f}" r="7"/>'
                )
            out.append(
                f'<circle class="pt {s.css}" cx="{frame.x(i):.1f}" cy="{frame.y(v):.1f}" r="3">'
                f"<title>{escape(what)}</title></circle>"
            )
    out.append("</svg>")
    return Markup("".join(out))


def _band(frame: _Frame, band: Sequence[tuple[float | None, float | None]]) -> list[str]:
    out, run = [], []
    for i, (low, high) in enumerate([*band, (None, None)]):
        if low is not None and high is not None:
            run.append((i, low, high))
            continue
        if run:
            top = [f"{frame.x(j):.1f},{frame.y(hi):.1f}" for j, _, hi in run]
            bottom = [f"{frame.x(j):.1f},{frame.y(lo):.1f}" for j, lo, _ in reversed(run)]
            if len(run) == 1:  # one day: a short bar
                j, lo, hi = run[0]
                left, right = frame.x(j) - frame.slot_width / 4, frame.x(j) + frame.slot_width / 4
                top = [f"{left:.1f},{frame.y(hi):.1f}", f"{right:.1f},{frame.y(hi):.1f}"]
                bottom = [f"{right:.1f},{frame.y(lo):.1f}", f"{left:.1f},{frame.y(lo):.1f}"]
            out.append(f'<polygon class="band" points="{" ".join(top + bottom)}"/>')
            run = []
    return out


def bar_chart(
    title: str,
    labels: Sequence[str],
    stacks: Sequence[Series],
    fmt: Format = count,
    empty: str = "nothing recorded in these days",
) -> Markup:
    """Stacked bars, one per slot; each part of a bar is one series' value."""
    totals = [sum(s.values[i] or 0 for s in stacks) for i in range(len(labels))]
    frame = _Frame(len(labels), totals, zero=True, integer=fmt is count)
    out = _open(title) + _axes(frame, labels, fmt) + _legend(stacks)
    if not any(totals):
        out.append(_empty(empty))
    width = frame.slot_width * 0.7
    for i, label in enumerate(labels):
        base = 0.0
        for s in stacks:
            v = s.values[i] or 0
            if v <= 0:
                continue
            y_top, y_base = frame.y(base + v), frame.y(base)
            out.append(
                f'<rect class="bar {s.css}" x="{frame.x(i) - width / 2:.1f}" y="{y_top:.1f}" '
                f'width="{width:.1f}" height="{y_base - y_top:.1f}">'
                f"<title>{escape(f'{label} · {s.name}: {fmt(v)}')}</title></rect>"
            )
            base += v
    out.append("</svg>")
    return Markup("".join(out))
