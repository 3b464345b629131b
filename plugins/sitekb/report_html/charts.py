"""Charts as inline SVG, drawn by this module alone: no JavaScript, no library, nothing fetched.

Every chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>``
(what it shows, in a sentence, for a screen reader), a title drawn on it,
labelled axes with round ticks, value labels and a legend where colours mean
something. :func:`data_table` gives the numbers beside it as a table. Every
text that reaches a chart (page titles, URLs, run ids) is escaped: it comes
from crawled pages and from people.

- :func:`bar_chart`: vertical bars per category, one or more series side by side;
- :func:`hbar_chart`: horizontal bars (shares, a funnel), with an optional limit line;
- :func:`timeline_chart`: snapshots in order, three panels on one x axis
  (pages, chunks, golden score), coloured by what became of each snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

# Okabe-Ito: told apart by people with the common colour-vision deficiencies.
BLUE, ORANGE, GREEN, RED, PURPLE, GREY, SKY, YELLOW = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7",
                                                       "#8a8f98", "#56B4E9", "#F0E442")
STATE_COLOURS = {"published": GREEN, "retired": SKY, "validated": GREY, "rejected": RED, "building": YELLOW}
STATE_NAMES = {"published": "published (live)", "retired": "published, since replaced",
               "validated": "passed, not published", "rejected": "rejected", "building": "building"}
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
WIDTH = 760


def _x(text) -> str:
    return escape(str(text), quote=True)


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least ``top`` (0, 25, 50, ... ; 0, 0.2, 0.4, ...)."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks = [0.0]
    while ticks[-1] < top - 1e-12:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def number(value: float) -> str:
    """A count for a label: 950, 1.2k, 3.4M."""
    value = float(value)
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            text = f"{value / limit:.1f}".rstrip("0").rstrip(".")
            return text + suffix
    return f"{value:.0f}" if value == int(value) else f"{value:.2g}"


def percent(value: float) -> str:
    return f"{value:.0%}"


def dollars(value: float) -> str:
    return "$0" if value == 0 else (f"${value:.4f}" if value < 1 else f"${value:,.2f}")


@dataclass
class Series:
    """One coloured set of values (one value per category)."""

    name: str
    values: Sequence[float]
    colour: str = BLUE
    labels: Sequence[str] | None = None   # drawn above each bar instead of the formatted value


@dataclass
class TimelinePoint:
    """One snapshot on the timeline."""

    label: str                 # "#12"
    sublabel: str              # "05-31"
    state: str
    pages: int
    chunks: int
    golden: float | None = None        # share of golden questions answered
    golden_text: str = ""              # "8/8"
    note: str = ""                     # shown in the tooltip


@dataclass
class _Canvas:
    chart_id: str
    width: int
    height: int
    title: str
    desc: str
    parts: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.parts.append(text)

    def text(self, x: float, y: float, text, *, size: int = 12, anchor: str = "start", weight: str = "normal",
             fill: str = "#1f2328", cls: str = "", rotate: float | None = None) -> None:
        transform = f' transform="rotate({rotate:g} {x:.1f} {y:.1f})"' if rotate is not None else ""
        klass = f' class="{cls}"' if cls else ""
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" font-weight="{weight}" '
                 f'fill="{fill}"{klass}{transform}>{_x(text)}</text>')

    def svg(self) -> str:
        head = (f'<svg id="{_x(self.chart_id)}" class="chart" role="img" '
                f'width="{self.width}" height="{self.height}" viewBox="0 0 {self.width} {self.height}" '
                f'font-family="{_x(FONT)}" aria-labelledby="{_x(self.chart_id)}-title {_x(self.chart_id)}-desc">'
                f'<title id="{_x(self.chart_id)}-title">{_x(self.title)}</title>'
                f'<desc id="{_x(self.chart_id)}-desc">{_x(self.desc)}</desc>'
                f'<rect width="{self.width}" height="{self.height}" fill="#ffffff"/>')
        return head + "".join(self.parts) + "</svg>"


def _legend(canvas: _Canvas, items: Sequence[tuple[str, str]], y: float, x: float | None = None) -> None:
    """Colour swatches with their names, in one row from ``x`` (default: under the title, left)."""
    x = 16 if x is None else x
    canvas.add('<g class="legend">')
    for name, colour in items:
        canvas.add(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="12" height="12" rx="2" fill="{colour}"/>')
        canvas.text(x + 17, y + 1, name, size=12)
        x += 17 + 7.2 * len(name) + 18
    canvas.add("</g>")


def _y_axis(canvas: _Canvas, left: float, top: float, height: float, right: float, ticks: Sequence[float],
            fmt: Callable[[float], str], label: str) -> Callable[[float], float]:
    """Grid lines and tick labels of a value axis; returns value -> y."""
    top_value = ticks[-1] or 1

    def y_of(value: float) -> float:
        return top + height - (value / top_value) * height

    canvas.add('<g class="axis y">')
    for tick in ticks:
        y = y_of(tick)
        canvas.add(f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d8dee4" '
                   f'stroke-width="1"/>')
        canvas.text(left - 6, y + 4, fmt(tick), size=11, anchor="end", fill="#57606a")
    canvas.add(f'<line x1="{left:.1f}" x2="{left:.1f}" y1="{top:.1f}" y2="{top + height:.1f}" stroke="#57606a"/>')
    canvas.text(14, top + height / 2, label, size=11, anchor="middle", fill="#57606a", rotate=-90)
    canvas.add("</g>")
    return y_of


def bar_chart(chart_id: str, title: str, categories: Sequence[str], series: Sequence[Series], *, y_label: str,
              desc: str, value_format: Callable[[float], str] = number, width: int = WIDTH, height: int = 300,
              bar_colours: Sequence[str] | None = None, legend: Sequence[tuple[str, str]] | None = None) -> str:
    """Vertical bars: one group per category, one bar per series. ``bar_colours`` colours each category's bar
    (one series) by what it means; ``legend`` then says what the colours are."""
    canvas = _Canvas(chart_id, width, height, title, desc)
    canvas.text(16, 22, title, size=15, weight="600")
    items = list(legend) if legend is not None else [(s.name, s.colour) for s in series] if len(series) > 1 else []
    if items:
        _legend(canvas, items, 44)
    left, right, top, bottom = 64, width - 16, 62 if items else 44, height - 44
    peak = max([v for s in series for v in s.values] + [0])
    ticks = nice_ticks(peak * 1.12 if peak else 1)
    y_of = _y_axis(canvas, left, top, bottom - top, right, ticks, value_format, y_label)
    n = max(1, len(categories))
    slot = (right - left) / n
    group = min(slot * 0.72, 48.0 * len(series))
    bar = group / max(1, len(series))
    canvas.add('<g class="bars">')
    for i, category in enumerate(categories):
        x0 = left + slot * i + (slot - group) / 2
        for j, s in enumerate(series):
            value = float(s.values[i]) if i < len(s.values) else 0.0
            colour = bar_colours[i] if bar_colours is not None and len(series) == 1 else s.colour
            y = y_of(value)
            h = max(bottom - y, 0.0)
            shown = s.labels[i] if s.labels is not None else value_format(value)
            canvas.add(f'<rect class="bar" x="{x0 + j * bar:.1f}" y="{y:.1f}" width="{max(bar - 2, 1):.1f}" '
                       f'height="{max(h, 0.5):.1f}" fill="{colour}"><title>{_x(category)}: {_x(s.name)} '
                       f'{_x(shown)}</title></rect>')
            canvas.text(x0 + j * bar + (bar - 2) / 2, y - 4, shown, size=10, anchor="middle", fill="#1f2328")
        canvas.text(left + slot * i + slot / 2, bottom + 16, _short(category, max(4, int(slot / 7))), size=11,
                    anchor="middle", fill="#1f2328")
    canvas.add("</g>")
    canvas.add(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#57606a"/>')
    return canvas.svg()


def hbar_chart(chart_id: str, title: str, rows: Sequence[tuple[str, float, str]], *, x_label: str, desc: str,
               max_value: float | None = None, value_format: Callable[[float], str] = percent,
               threshold: float | None = None, threshold_label: str = "", colour: str = BLUE,
               colours: Sequence[str] | None = None, width: int = WIDTH, label_width: int = 230) -> str:
    """Horizontal bars, one row each: (label, value, note drawn after the value). ``threshold``: a dashed
    limit line; a bar beyond it is drawn in orange."""
    row_height = 26
    top = 44 + (18 if threshold is not None else 0)
    height = top + row_height * max(1, len(rows)) + 40
    canvas = _Canvas(chart_id, width, height, title, desc)
    canvas.text(16, 22, title, size=15, weight="600")
    left, right = 16 + label_width, width - 150
    peak = max([r[1] for r in rows] + [threshold or 0, 0])
    ticks = nice_ticks(max_value if max_value is not None else (peak or 1))
    top_value = ticks[-1] or 1

    def x_of(value: float) -> float:
        return left + (value / top_value) * (right - left)

    bottom = top + row_height * max(1, len(rows))
    canvas.add('<g class="axis x">')
    for tick in ticks:
        x = x_of(tick)
        canvas.add(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{bottom}" stroke="#d8dee4"/>')
        canvas.text(x, bottom + 15, value_format(tick), size=11, anchor="middle", fill="#57606a")
    canvas.text((left + right) / 2, bottom + 32, x_label, size=11, anchor="middle", fill="#57606a")
    canvas.add("</g>")
    canvas.add('<g class="bars">')
    for i, (label, value, note) in enumerate(rows):
        y = top + i * row_height
        over = threshold is not None and value > threshold
        fill = ORANGE if over else (colours[i] if colours is not None else colour)
        canvas.text(left - 8, y + 17, _short(label, int(label_width / 6.8)), size=12, anchor="end")
        canvas.add(f'<rect class="bar" x="{left}" y="{y + 4}" width="{max(x_of(value) - left, 1):.1f}" '
                   f'height="{row_height - 8}" fill="{fill}"><title>{_x(label)}: {_x(value_format(value))}'
                   f'{_x(" " + note if note else "")}</title></rect>')
        shown = value_format(value) + (f"  {note}" if note else "")
        if x_of(value) + 6 + 6.2 * len(shown) > width - 4:   # no room after the bar: written inside it
            canvas.text(x_of(value) - 6, y + 17, shown, size=11, anchor="end", fill="#ffffff", weight="600")
        else:
            canvas.text(x_of(value) + 6, y + 17, shown, size=11, fill="#1f2328")
    canvas.add("</g>")
    if threshold is not None:
        x = x_of(threshold)
        canvas.add(f'<line class="threshold" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 10}" y2="{bottom}" '
                   f'stroke="{RED}" stroke-width="2" stroke-dasharray="5 4"/>')
        canvas.text(x, top - 14, threshold_label or f"limit {value_format(threshold)}", size=11, anchor="middle",
                    fill=RED)
    canvas.add(f'<line x1="{left}" x2="{left}" y1="{top - 4}" y2="{bottom}" stroke="#57606a"/>')
    return canvas.svg()


def timeline_chart(chart_id: str, title: str, points: Sequence[TimelinePoint], *, desc: str,
                   width: int = WIDTH) -> str:
    """Snapshots oldest to newest: pages, chunks and golden score, one panel each on a shared x axis, every
    bar coloured by what became of its snapshot (the legend says which colour is which)."""
    states = [s for s in STATE_COLOURS if any(p.state == s for p in points)] or ["published"]
    panel, gap = 92, 30
    top0 = 66
    height = top0 + 3 * panel + 2 * gap + 50
    canvas = _Canvas(chart_id, width, height, title, desc)
    canvas.text(16, 22, title, size=15, weight="600")
    _legend(canvas, [(STATE_NAMES[s], STATE_COLOURS[s]) for s in states] + [("golden score", PURPLE)], 44)
    left, right = 64, width - 16
    n = max(1, len(points))
    slot = (right - left) / n
    bar = min(slot * 0.6, 44)
    panels = (("Pages", [p.pages for p in points], number), ("Chunks", [p.chunks for p in points], number))
    for k, (name, values, fmt) in enumerate(panels):
        top = top0 + k * (panel + gap)
        peak = max(values + [0])
        y_of = _y_axis(canvas, left, top, panel, right, nice_ticks(peak * 1.15 if peak else 1, 3), fmt, name)
        canvas.add(f'<g class="bars panel-{name.lower()}">')
        for i, (p, value) in enumerate(zip(points, values)):
            x = left + slot * i + (slot - bar) / 2
            y = y_of(value)
            canvas.add(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{max(top + panel - y, 0.5):.1f}" '
                       f'fill="{STATE_COLOURS.get(p.state, GREY)}"><title>snapshot {_x(p.label)} ({_x(p.state)}): '
                       f'{_x(fmt(value))} {name.lower()}{_x(". " + p.note if p.note else "")}</title></rect>')
            if slot >= 26:
                canvas.text(x + bar / 2, y - 4, fmt(value), size=10, anchor="middle")
        canvas.add("</g>")
    top = top0 + 2 * (panel + gap)
    y_of = _y_axis(canvas, left, top, panel, right, [0, 0.25, 0.5, 0.75, 1.0], percent, "Golden")
    canvas.add('<g class="golden">')
    dots = [(left + slot * i + slot / 2, y_of(p.golden), p) for i, p in enumerate(points) if p.golden is not None]
    if len(dots) > 1:
        path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y, _) in enumerate(dots))
        canvas.add(f'<path d="{path}" fill="none" stroke="{PURPLE}" stroke-width="2"/>')
    for x, y, p in dots:
        canvas.add(f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{PURPLE}" '
                   f'stroke="{STATE_COLOURS.get(p.state, GREY)}" stroke-width="2"><title>snapshot {_x(p.label)}: '
                   f'golden {_x(p.golden_text or percent(p.golden or 0))}</title></circle>')
        if slot >= 26:
            canvas.text(x, y - 9, p.golden_text or percent(p.golden or 0), size=10, anchor="middle")
    if not dots:
        canvas.text((left + right) / 2, top + panel / 2, "no golden questions asked", size=12, anchor="middle",
                    fill="#57606a")
    canvas.add("</g>")
    bottom = top + panel
    every = max(1, math.ceil(n * 46 / (right - left)))
    for i, p in enumerate(points):
        if i % every and i != n - 1:
            continue
        x = left + slot * i + slot / 2
        canvas.text(x, bottom + 16, p.label, size=11, anchor="middle", weight="600")
        canvas.text(x, bottom + 30, p.sublabel, size=10, anchor="middle", fill="#57606a")
    canvas.text((left + right) / 2, bottom + 46, "snapshot (oldest to newest)", size=11, anchor="middle",
                fill="#57606a")
    return canvas.svg()


def data_table(caption: str, columns: Sequence[str], rows: Sequence[Sequence], *, numeric: Sequence[int] = ()) -> str:
    """The numbers of a chart as an HTML table (inside a <details>, open to anyone who wants them)."""
    head = "".join(f'<th scope="col"{" class=num" if i in numeric else ""}>{_x(c)}</th>'
                   for i, c in enumerate(columns))
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{_x("" if v is None else v)}</td>'
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return (f'<details class="data"><summary>{_x(caption)}: the numbers</summary>'
            f'<table><caption>{_x(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f'</details>')


def _short(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"
